"""One local Ray for the whole of tests/cluster (2 CPUs), started on first use; skipped without Ray."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'tgrs-agents[ray]')")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
