"""The loop's summary.json keeps the wall time of every invocation (issue 11, item 7): a re-run of
a finished loop adds its few seconds to the recorded total instead of replacing it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.rounds import ExpertIteration


def test_a_rerun_adds_its_wall_time_to_the_recorded_total(tmp_path: Path) -> None:
    cfg = LoopConfig(base_dir=str(tmp_path))
    out = tmp_path / "run"
    out.mkdir()
    # the first invocation ran 146 s (as its summary recorded)
    (out / "summary.json").write_text(json.dumps({"arm": "filtered", "rounds": [], "wall_s": 146.0}))
    loop = ExpertIteration(cfg, out, log=lambda _: None)
    s = loop.summary([], time.perf_counter() - 3.0)  # this invocation has run 3 s
    assert s["wall_s_invocation"] == pytest.approx(3.0, abs=0.5)
    assert s["wall_s"] == pytest.approx(149.0, abs=0.5)
    assert s["invocations_wall_s"][0] == 146.0 and len(s["invocations_wall_s"]) == 2
    loop = ExpertIteration(cfg, out, log=lambda _: None)
    again = loop.summary([], time.perf_counter() - 2.0)
    assert again["invocations_wall_s"][:2] == pytest.approx(s["invocations_wall_s"], abs=1e-3)
    assert again["wall_s"] == pytest.approx(151.0, abs=0.5)
    assert json.loads((out / "summary.json").read_text())["wall_s"] == again["wall_s"]
