"""``kind = "metadata"``: a recorded outcome (tau-bench reward, Inspect score, SWE-bench resolved) as a
free verifier: thresholds, expected values, dotted paths, missing fields and defaults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.teachers.base import teacher_class
from tgrs_agents.teachers.metadata import MetadataConfig, MetadataTeacher, lookup
from tgrs_agents.types import Candidate, Verdict


def cand(**meta: Any) -> Candidate:
    return Candidate(id="c", messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                     metadata=meta)


def judge(meta: dict[str, Any], **cfg: Any) -> Verdict:
    t = MetadataTeacher(MetadataConfig(name="m", **cfg))
    return asyncio.run(t.judge(cand(**meta)))


@pytest.mark.parametrize(("value", "threshold", "ok", "score"), [
    (1.0, 1.0, True, 1.0), (0.0, 1.0, False, 0.0), (0.75, 0.5, True, 0.75), (0.25, 0.5, False, 0.25),
    (True, 1.0, True, 1.0), (False, 0.5, False, 0.0), ("0.9", 0.5, True, 0.9), (7, 5, True, 1.0), (3, 5, False, 0.0),
])
def test_threshold(value: Any, threshold: float, ok: bool, score: float) -> None:
    v = judge({"reward": value}, field="reward", threshold=threshold)
    assert (v.passed, v.score, v.error) == (ok, score, None)
    assert v.rationale.startswith(f"reward = {value!r} ")


@pytest.mark.parametrize(("value", "expected", "ok"), [
    ("C", "C", True), ("I", "C", False), (True, True, True), (1, True, False), (True, 1, False),
    (1, 1.0, True), ("P", ["C", "P"], True), ("I", ["C", "P"], False),
])
def test_expected(value: Any, expected: Any, ok: bool) -> None:
    assert judge({"v": value}, field="v", expected=expected).passed is ok


def test_dotted_paths_reach_nested_fields_and_list_items() -> None:
    meta = {"scores": {"match": {"value": "C"}}, "test_result": {"report": {"resolved": True}},
            "runs": [{"ok": False}, {"ok": True}]}
    assert judge(meta, field="scores.match.value", expected="C").passed
    assert judge(meta, field="test_result.report.resolved", expected=True).passed
    assert judge(meta, field="runs.1.ok", expected=True).passed and not judge(meta, field="runs.0.ok",
                                                                              expected=True).passed
    assert lookup(meta, "runs.5.ok") is lookup(meta, "nope") is lookup(meta, "scores.match.value.x")


def test_missing_field_is_an_error_unless_a_default_is_given() -> None:
    t = MetadataTeacher(MetadataConfig(name="m", field="reward", threshold=1.0))
    with pytest.raises(TeacherError, match="no metadata field 'reward'"):
        asyncio.run(t.judge(cand(other=1)))
    v = judge({}, field="reward", threshold=1.0, default=0.0)
    assert not v.passed and v.error is None and "assumed" in v.rationale
    assert judge({"reward": None}, field="reward", threshold=0.5, default=1).passed


def test_a_value_that_is_not_a_number_is_an_error_for_a_threshold() -> None:
    t = MetadataTeacher(MetadataConfig(name="m", field="s", threshold=0.5))
    with pytest.raises(TeacherError, match="expected a number or a boolean"):
        asyncio.run(t.judge(cand(s="C")))


@pytest.mark.parametrize("cfg", [{"field": "r"}, {"field": "r", "threshold": 1, "expected": 1},
                                 {"field": "", "threshold": 1}, {"field": "r", "threshold": 1, "oops": 2}])
def test_config_mistakes_are_refused(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MetadataConfig(name="m", **cfg)


def test_registered_free_and_inline_and_first_in_a_panel(tmp_path: Path) -> None:
    assert teacher_class("metadata") is MetadataTeacher and MetadataTeacher.inline
    assert MetadataConfig(name="m", field="r", threshold=1).cost_rank == 0
    panel_file = tmp_path / "panel.toml"
    panel_file.write_text('policy = "unanimous"\n\n[[teacher]]\nname = "reward"\nkind = "metadata"\n'
                          'field = "reward"\nthreshold = 1.0\n\n[[teacher]]\nname = "marker"\nkind = "regex"\n'
                          'pattern = "never"\ncost_rank = 1\n')
    panel = Panel.from_config(load_panel(panel_file))
    decision, _ = asyncio.run(panel.judge(cand(reward=0.0)))
    assert decision.accepted is False and decision.decided_by == "reward" and decision.saved == ("marker",)
    missing, _ = asyncio.run(panel.judge(cand()))
    assert missing.verdicts[0].error and "no metadata field" in missing.verdicts[0].error


def test_a_panel_file_with_a_bad_metadata_teacher_names_the_field(tmp_path: Path) -> None:
    panel_file = tmp_path / "panel.toml"
    panel_file.write_text('[[teacher]]\nname = "reward"\nkind = "metadata"\nfield = "reward"\n')
    with pytest.raises(ConfigError, match="threshold"):
        load_panel(panel_file)
