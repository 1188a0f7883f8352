"""One local Ray for the whole of tests/cluster (2 CPUs), started on first use; skipped without Ray.
And the loopback stand-in (an OpenAI-compatible judge at 2,400 requests/min that counts its calls)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'tgrs-agents[ray]')")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def standin():
    proc = subprocess.Popen([sys.executable, "-m", "tgrs_agents.testing.standin", "--port", "0", "--plan",
                             json.dumps({"rpm": 2400, "latency_mean_s": 0.05, "seed": 1})],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    yield f"http://127.0.0.1:{int(line.split()[1])}"
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()
