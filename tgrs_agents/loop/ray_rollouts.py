"""The loop's generate stage on Ray (``[generate] engine = "ray"``): the tasks split over workers, one
model replica per worker.

Each worker is a Ray task that loads the round's checkpoint once (transformers on CPU, or vLLM/a GPU:
then it asks Ray for one GPU) and runs the single-process sampler
(:func:`tgrs_agents.loop.sampling.rollouts`) on a contiguous slice of the tasks; the slices' records,
concatenated in slice order, are in the order one process returns them (task order, then sample
order), with the same ids (``{prefix}{task id}-s{k}``). Judging then goes through the panel as
before (on Ray too with ``tgrs curate --engine ray``); SFT stays on one node.

What equals one process, and what does not:

* greedy decoding (``temperature = 0``): the same records (tested);
* sampling (``temperature > 0``): the same distribution, other draws. The sampler reseeds torch per
  call, and which rows share a batch decides which random numbers each row gets (as ``batch_size``
  does: it is operational for the same reason). Slice ``i`` samples with ``seed + SEED_STRIDE * i``,
  so slices do not replay each other's random streams; slice 0 keeps the run's seed, so one worker
  gives one process's records exactly, and a run is repeatable for a given seed and worker count.

A served student or ``[generator]`` (``backend = "openai"``) is not sharded: its calls already run
concurrently under the endpoint's limiter, which is the bound, not this process; it samples in the
driver as with the local engine.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..cluster import require_ray
from ..errors import ConfigError

SEED_STRIDE = 1_000_033


def split(items: list[Any], k: int) -> list[list[Any]]:
    """``items`` in ``k`` contiguous slices (sizes differ by one at most; none empty)."""
    k = max(1, min(k, len(items)))
    q, r = divmod(len(items), k)
    out, at = [], 0
    for i in range(k):
        size = q + (i < r)
        out.append(items[at:at + size])
        at += size
    return out


def _slice(cfg: Any, model_path: Any, tasks: list[Any], n: int, temperature: float,
           id_prefix: str) -> tuple[list[dict[str, Any]], Any]:
    from ..paid.services import Services
    from .sampling import rollouts

    return rollouts(cfg, model_path, tasks, n, temperature, id_prefix, Services())


def rollouts_on_ray(cfg: Any, model_path: Path | str | Any, tasks: list[Any], n: int, temperature: float,
                    id_prefix: str, services: Any = None, *, workers: int | None = None,
                    address: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    """:func:`~tgrs_agents.loop.sampling.rollouts` with the tasks split over ``workers`` Ray workers
    (default ``[generate] workers``); ``address`` (default: ``RAY_ADDRESS``, else a local Ray). A served
    model (``services``: the run's paid-call layer) samples in this process, as with the local engine."""
    from ..cluster.engine import _get
    from ..generate.rollouts import RolloutStats
    from .config import GeneratorConfig
    from .sampling import rollouts

    g = cfg.generate
    workers = workers or g.workers
    if workers < 1:
        raise ConfigError(f"expected at least one worker, got {workers}", file=cfg.source, field="generate.workers")
    local = cfg.model_copy(update={"generate": g.model_copy(update={"engine": "local"})})
    if isinstance(model_path, GeneratorConfig) or cfg.student.backend == "openai":
        from ..paid.services import Services

        return rollouts(local, model_path, tasks, n, temperature, id_prefix, services or Services())
    try:
        ray: Any = require_ray()
    except ConfigError:
        raise ConfigError("engine = \"ray\" needs Ray: pip install 'tgrs-agents[ray]'", file=cfg.source,
                          field="generate.engine") from None
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
    device = cfg.student.device or ""
    gpus = 1 if (cfg.student.backend == "vllm" or device.startswith("cuda")
                 or (not device and ray.cluster_resources().get("GPU", 0) > 0)) else 0
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(_slice)
    t0 = time.perf_counter()
    parts = split(list(tasks), workers)
    refs = [task.remote(local.model_copy(update={"seed": cfg.seed + SEED_STRIDE * i}), str(model_path), part, n,
                        temperature, id_prefix) for i, part in enumerate(parts)]
    results = _get(ray, refs)  # a slice's own error (a model that cannot be loaded): said as it is
    stats = RolloutStats(stops=Counter())
    records: list[dict[str, Any]] = []
    for recs, st in results:
        records += recs
        stats.rollouts += st.rollouts
        stats.steps = max(stats.steps, st.steps)
        stats.generated_tokens += st.generated_tokens
        stats.stops.update(st.stops)
    stats.wall_s = time.perf_counter() - t0  # the stage's wall: tokens_per_s is the cluster's rate
    return records, stats
