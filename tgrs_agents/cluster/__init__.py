"""Curation across a Ray cluster (``tgrs curate --engine ray``), with one rate limit, one budget and
one ledger for the whole cluster.

* :mod:`.leases` -- the cluster's paid-call state as plain objects (a lease bank per endpoint, a
  budget book), clock-injected so they are tested in virtual time without Ray;
* :mod:`.limiter` -- :class:`~.limiter.LeasedLimiter`, the worker's side: the single-process
  :class:`~tgrs_agents.paid.limits.EndpointLimiter` (slots, pacing, headers), gated by leases;
* :mod:`.actors` -- the Ray actors that own the bank and the book (the only module importing Ray
  at import time; nothing imports it until ``--engine ray`` runs);
* :mod:`.shards` and :mod:`.engine` -- line-aligned byte-range shards, one curate run per shard on a
  Ray worker, merged into the run directory's usual files;
* :mod:`.ids` -- the id pre-pass: a repeated id whose first use is in an earlier shard is set aside
  as one process sets it aside, and never judged;
* :mod:`.api` -- ``tgrs_agents.curate``: the local engine or this one;
* the loop's generate stage on Ray (``[generate] engine = "ray"``) is :mod:`tgrs_agents.loop.ray_rollouts`:
  the tasks split over workers, one model replica each.

What runs where on a real cluster, and how far it scales: ``docs/scale.md``.

Ray is an optional extra (``pip install tgrs-agents[ray]``): ``import tgrs_agents`` never imports it.
"""

RAY_MISSING = "--engine ray needs Ray: pip install 'tgrs-agents[ray]'"


def require_ray() -> object:
    """The ``ray`` module, or a :class:`~tgrs_agents.errors.ConfigError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError(RAY_MISSING, field="engine") from None
    return ray
