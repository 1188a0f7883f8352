"""Suite-wide settings: no traffic leaves this machine, no verdicts leak into the user's cache."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(autouse=True)
def _denormals_restored():
    """Training and local models set ``torch.set_flush_denormal(True)`` for CPU speed; on the main
    thread that flag outlives the test and makes hypothesis refuse to draw floats in later ones.
    Put it back after each test, so no test depends on the order the suite runs in."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)
