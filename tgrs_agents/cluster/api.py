"""``tgrs_agents.curate``: one entry point for both engines.

``engine="local"`` (the default) is :func:`tgrs_agents.curation.run.curate`, this process;
``engine="ray"`` shards the input over ``workers`` Ray workers (``ray_address``: join a running cluster,
else a local one is started) with one rate limit, one budget and one ledger for all of them, and the
same result (:func:`tgrs_agents.cluster.engine.acurate_on_ray`; ``pip install 'tgrs-agents[ray]'``).
It lives here, above curation, so curation never imports the layer that runs it on Ray.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..curation.panel_file import PanelConfig
from ..curation.run import CurateOptions
from ..curation.run import curate as curate_here
from ..errors import ConfigError
from ..events import EventBus


async def curate(
    input_path: str | Path,
    panel: PanelConfig,
    out: str | Path,
    *,
    options: CurateOptions = CurateOptions(),
    bus: EventBus | None = None,
    input_format: str | None = None,
    engine: str = "local",
    workers: int = 4,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Curate a file of trajectories with a panel; returns the run summary (see the module docstring)."""
    if engine not in ("local", "ray"):
        raise ConfigError(f"expected engine 'local' or 'ray', got {engine!r}", field="engine")
    if input_format is not None:
        options = replace(options, input_format=input_format)
    if engine == "local":
        return await curate_here(input_path, panel, out, options=options, bus=bus)
    from .engine import acurate_on_ray  # imports Ray only when it runs

    return await acurate_on_ray(input_path, panel, out, options=options, workers=workers, address=ray_address,
                                bus=bus)
