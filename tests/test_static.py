"""The code passes its own static checks: ruff (style, imports, bugs it can see) and mypy with the
pydantic plugin (types, as configured in pyproject.toml). Each runs as the developer runs it, so a
red check here is what ``ruff check`` / ``mypy`` would print."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (the [dev] extra)")
def test_ruff_finds_nothing():
    r = _run("ruff", "check", "tgrs_agents", "tests", "benchmarks", timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the [dev] extra)")
def test_mypy_finds_no_type_errors_in_the_package():
    r = _run("mypy", "tgrs_agents", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
