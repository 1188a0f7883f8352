"""The programmatic verifiers: final_answer, regex, json_schema and python."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.teachers.base import BuildContext, teacher_class
from tgrs_agents.teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher, parse_number
from tgrs_agents.teachers.json_schema import JsonSchemaConfig, JsonSchemaTeacher
from tgrs_agents.teachers.python_fn import PythonConfig, PythonTeacher
from tgrs_agents.teachers.regex import RegexConfig, RegexTeacher
from tgrs_agents.types import Candidate, Verdict


def cand(final: str, reference: Any = None, *, extra: list[dict[str, Any]] | None = None) -> Candidate:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "What is it?"}, *(extra or [])]
    msgs.append({"role": "assistant", "content": final})
    return Candidate(id="c1", messages=msgs, reference=reference)


def run(teacher: Any, candidate: Candidate) -> Verdict:
    return asyncio.run(teacher.judge(candidate))


# --------------------------------------------------------------------------------------------
# final_answer


def fa(**kw: Any) -> FinalAnswerTeacher:
    return FinalAnswerTeacher(FinalAnswerConfig(name="answer", **kw))


@pytest.mark.parametrize(
    ("text", "reference", "ok"),
    [
        ("Answer: 42", 42, True),
        ("Answer: 42", "42", True),
        ("Answer: 43", 42, False),
        ("Answer: 12.0", 12, True),
        ("Answer: 12.", 12, True),
        ("Answer: 0.30000000000000004", 0.3, True),
        ("Answer: 0.3001", 0.3, False),
        ("Answer: 1,234", 1234, True),
        ("Answer: 1,234", "1234", True),
        ("Answer: $5", 5, True),
        ("Answer: $5.00", "5", True),
        ("Answer: 3/4", 0.75, True),
        ("Answer: 3/4", "0.75", True),
        ("Answer: 3/4", 0.7, False),
        ("Answer: -17", -17, True),
        ("Answer: -17", 17, False),
        ("Answer: -2.5", "-5/2", True),
    ],
)
def test_final_answer_numbers(text: str, reference: Any, ok: bool) -> None:
    v = run(fa(), cand(text, reference))
    assert v.passed is ok
    assert v.score == (1.0 if ok else 0.0)
    assert v.teacher == "answer"
    assert v.error is None


def test_final_answer_tolerance_is_configurable() -> None:
    assert run(fa(), cand("Answer: 100.5", 100)).passed is False
    assert run(fa(rel_tol=0.01), cand("Answer: 100.5", 100)).passed is True


@pytest.mark.parametrize(
    ("text", "reference", "ok"),
    [
        ("Answer: Paris", "paris", True),
        ("Answer:   New   York  ", "new york", True),
        ("Answer: New\tYork", "NEW YORK", True),
        ("Answer: Lyon", "Paris", False),
        ("Answer: Paris, France", "Paris", False),
    ],
)
def test_final_answer_text(text: str, reference: Any, ok: bool) -> None:
    assert run(fa(), cand(text, reference)).passed is ok


def test_final_answer_case_sensitive_option() -> None:
    assert run(fa(case_sensitive=True), cand("Answer: paris", "Paris")).passed is False
    assert run(fa(case_sensitive=True), cand("Answer: Paris", "Paris")).passed is True


def test_final_answer_list_reference_accepts_any_item() -> None:
    t = fa()
    assert run(t, cand("Answer: 4", [3, "four", 4.0])).passed is True
    assert run(t, cand("Answer: Four", [3, "four"])).passed is True
    assert run(t, cand("Answer: 5", [3, "four"])).passed is False


def test_final_answer_last_marker_wins_and_only_its_line() -> None:
    text = "Answer: 3\nwait, let me check again.\nAnswer: 5\nThat is all."
    assert run(fa(), cand(text, 5)).passed is True
    assert run(fa(), cand(text, 3)).passed is False


def test_final_answer_reads_the_last_assistant_message() -> None:
    c = Candidate(
        id="c",
        reference=7,
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "Answer: 7"},
            {"role": "user", "content": "are you sure?"},
            {"role": "assistant", "content": "Answer: 8"},
        ],
    )
    assert run(fa(), c).passed is False


def test_final_answer_missing_marker_fails() -> None:
    v = run(fa(), cand("The result is 42.", 42))
    assert v.passed is False
    assert "Answer:" in v.rationale


def test_final_answer_custom_marker() -> None:
    assert run(fa(marker="####"), cand("work...\n#### 42", 42)).passed is True
    assert run(fa(marker="####"), cand("Answer: 42", 42)).passed is False


def test_final_answer_missing_reference_raises() -> None:
    with pytest.raises(TeacherError, match="reference") as ei:
        run(fa(), cand("Answer: 42", None))
    assert ei.value.teacher == "answer"


def test_parse_number() -> None:
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("$5") == 5
    assert parse_number("3/4") == 0.75
    assert parse_number("-3") == -3
    assert parse_number("abc") is None
    assert parse_number("") is None
    assert parse_number("1/0") is None


# --------------------------------------------------------------------------------------------
# regex


def rx(**kw: Any) -> RegexTeacher:
    return RegexTeacher(RegexConfig(name="fmt", **kw))


def test_regex_must_match() -> None:
    t = rx(pattern=r"Answer:\s*-?\d")
    assert run(t, cand("Answer: -3")).passed is True
    assert run(t, cand("Answer: three")).passed is False


def test_regex_must_not_match() -> None:
    t = rx(pattern=r"I cannot|As an AI", must_match=False)
    assert run(t, cand("Answer: 3")).passed is True
    v = run(t, cand("As an AI I cannot"))
    assert v.passed is False and v.score == 0.0


def test_regex_flags() -> None:
    assert run(rx(pattern="answer"), cand("ANSWER: 3")).passed is False
    assert run(rx(pattern="answer", flags="i"), cand("ANSWER: 3")).passed is True
    assert run(rx(pattern="^done$"), cand("a\ndone\nb")).passed is False
    assert run(rx(pattern="^done$", flags="m"), cand("a\ndone\nb")).passed is True
    assert run(rx(pattern="a.b", flags="s"), cand("a\nb")).passed is True
    with pytest.raises(ValueError, match="imsx"):
        RegexConfig(name="x", pattern="a", flags="q")


def test_regex_target_trajectory() -> None:
    c = cand(
        "Answer: 4",
        extra=[
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "1", "content": "CALC_RESULT 4"},
        ],
    )
    assert run(rx(pattern="CALC_RESULT"), c).passed is False
    assert run(rx(pattern="CALC_RESULT", target="trajectory"), c).passed is True
    assert run(rx(pattern="What is it", target="trajectory"), c).passed is True


def test_regex_invalid_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        RegexConfig(name="x", pattern="(unclosed")


# --------------------------------------------------------------------------------------------
# json_schema

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "items": {"type": "array", "items": {"type": "integer"}}},
    "required": ["name"],
}


def js(tmp: Path | None = None, **kw: Any) -> JsonSchemaTeacher:
    ctx = BuildContext(base_dir=tmp, source=str(tmp / "panel.toml")) if tmp else None
    return JsonSchemaTeacher(JsonSchemaConfig(name="json", **kw), ctx)


def test_json_schema_inline() -> None:
    t = js(schema=SCHEMA)
    assert run(t, cand('{"name": "x", "items": [1, 2]}')).passed is True
    assert run(t, cand('{"items": []}')).passed is False


def test_json_schema_file_relative_to_panel_dir(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "s.json").write_text(json.dumps(SCHEMA))
    t = js(tmp_path, schema_file="schemas/s.json")
    assert run(t, cand('{"name": "x"}')).passed is True
    assert run(t, cand('{"name": 3}')).passed is False


def test_json_schema_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema file") as ei:
        js(tmp_path, schema_file="nope.json")
    assert ei.value.field == "teacher.json.schema_file"
    assert str(tmp_path / "panel.toml") in str(ei.value)


def test_json_schema_fences() -> None:
    t = js(schema=SCHEMA)
    assert run(t, cand('```json\n{"name": "x"}\n```')).passed is True
    assert run(t, cand('```\n{"name": "x"}\n```')).passed is True
    t2 = js(schema=SCHEMA, strip_fences=False)
    assert run(t2, cand('```json\n{"name": "x"}\n```')).passed is False


def test_json_schema_invalid_json() -> None:
    v = run(js(schema=SCHEMA), cand("{name: x}"))
    assert v.passed is False
    assert "not JSON" in v.rationale


def test_json_schema_violation_names_the_path() -> None:
    v = run(js(schema=SCHEMA), cand('{"name": "x", "items": [1, "two"]}'))
    assert v.passed is False
    assert "items/1" in v.rationale
    v = run(js(schema=SCHEMA), cand('{"items": []}'))
    assert "(root)" in v.rationale and "name" in v.rationale


def test_json_schema_invalid_schema_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid JSON schema") as ei:
        js(tmp_path, schema={"type": "no-such-type"})
    assert ei.value.field == "teacher.json.schema"
    assert str(tmp_path / "panel.toml") in str(ei.value)


def test_json_schema_needs_exactly_one_schema() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JsonSchemaConfig(name="j")
    with pytest.raises(ValueError, match="exactly one"):
        JsonSchemaConfig(name="j", schema=SCHEMA, schema_file="s.json")


# --------------------------------------------------------------------------------------------
# python

USER_CHECKS = '''
import asyncio
import threading
from tgrs_agents.types import Verdict

def is_yes(c):
    return c.final_text == "yes"

def score(c):
    return float(c.final_text)

def with_reason(c):
    return (c.final_text == "yes", "because " + c.final_text)

def score_reason(c):
    return (0.75, "mostly")

def verdict(c):
    return Verdict(teacher="whoever", passed=True, score=0.9, rationale="custom")

async def async_check(c):
    await asyncio.sleep(0)
    return c.final_text == "yes"

def thread_name(c):
    return (True, threading.current_thread().name)

def boom(c):
    raise RuntimeError("kaput")

def weird(c):
    return "yes"

NOT_CALLABLE = 3
'''


@pytest.fixture
def checks_dir(tmp_path: Path) -> Path:
    (tmp_path / "checks.py").write_text(textwrap.dedent(USER_CHECKS))
    return tmp_path


def py(base: Path, function: str, **kw: Any) -> PythonTeacher:
    ctx = BuildContext(base_dir=base, source=str(base / "panel.toml"))
    return PythonTeacher(PythonConfig(name="fn", function=function, **kw), ctx)


def test_python_module_function() -> None:
    t = py(Path.cwd(), "tgrs_agents.teachers.checks:answer_matches_tool")
    good = cand(
        "Answer: 12",
        extra=[{"role": "tool", "tool_call_id": "1", "content": "12"}],
    )
    assert run(t, good).passed is True
    assert run(t, cand("Answer: 12")).passed is False


def test_python_module_on_sys_path(checks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(checks_dir))
    name = "tgrs_test_user_checks_mod"
    (checks_dir / f"{name}.py").write_text(textwrap.dedent(USER_CHECKS))
    monkeypatch.delitem(sys.modules, name, raising=False)
    t = py(Path("/"), f"{name}:is_yes")
    assert run(t, cand("yes")).passed is True
    assert run(t, cand("no")).passed is False
    sys.modules.pop(name, None)


def test_python_file_relative_to_base_dir(checks_dir: Path) -> None:
    t = py(checks_dir, "checks.py:is_yes")
    v = run(t, cand("yes"))
    assert v.passed is True and v.score == 1.0 and v.teacher == "fn"
    assert run(t, cand("no")).passed is False


def test_python_async_function(checks_dir: Path) -> None:
    t = py(checks_dir, "checks.py:async_check")
    assert run(t, cand("yes")).passed is True
    assert run(t, cand("no")).passed is False


def test_python_score_and_threshold(checks_dir: Path) -> None:
    t = py(checks_dir, "checks.py:score")
    v = run(t, cand("0.6"))
    assert v.passed is True and v.score == pytest.approx(0.6)
    v = run(t, cand("0.4"))
    assert v.passed is False and v.score == pytest.approx(0.4)
    strict = py(checks_dir, "checks.py:score", threshold=0.9)
    assert run(strict, cand("0.6")).passed is False
    assert run(strict, cand("0.9")).passed is True


def test_python_value_rationale_pairs(checks_dir: Path) -> None:
    v = run(py(checks_dir, "checks.py:with_reason"), cand("yes"))
    assert v.passed is True and v.rationale == "because yes"
    v = run(py(checks_dir, "checks.py:score_reason"), cand("x"))
    assert v.passed is True and v.score == 0.75 and v.rationale == "mostly"


def test_python_verdict_return_is_renamed(checks_dir: Path) -> None:
    v = run(py(checks_dir, "checks.py:verdict"), cand("x"))
    assert v.teacher == "fn" and v.score == 0.9 and v.rationale == "custom"


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_python_out_of_range_score_is_teacher_error(checks_dir: Path, value: str) -> None:
    with pytest.raises(TeacherError, match=r"expected a value in \[0, 1\]") as ei:
        run(py(checks_dir, "checks.py:score"), cand(value))
    assert ei.value.teacher == "fn"


def test_python_exception_is_teacher_error(checks_dir: Path) -> None:
    with pytest.raises(TeacherError, match="RuntimeError: kaput") as ei:
        run(py(checks_dir, "checks.py:boom"), cand("x"))
    assert ei.value.teacher == "fn"


def test_python_unsupported_return_is_teacher_error(checks_dir: Path) -> None:
    with pytest.raises(TeacherError, match="returned str"):
        run(py(checks_dir, "checks.py:weird"), cand("x"))


def test_python_thread_option(checks_dir: Path) -> None:
    main = threading.current_thread().name
    v = run(py(checks_dir, "checks.py:thread_name"), cand("x"))
    assert v.rationale == main
    v = run(py(checks_dir, "checks.py:thread_name", thread=True), cand("x"))
    assert v.rationale != main


@pytest.mark.parametrize(
    "function",
    [
        "checks.py:no_such_function",
        "missing.py:is_yes",
        "no_such_module_tgrs_xyz:fn",
        "checks.py:NOT_CALLABLE",
    ],
)
def test_python_missing_function_is_config_error(checks_dir: Path, function: str) -> None:
    with pytest.raises(ConfigError, match="importable function") as ei:
        py(checks_dir, function)
    assert ei.value.field == "teacher.fn.function"
    assert str(checks_dir / "panel.toml") in str(ei.value)


def test_python_function_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="function"):
        PythonConfig(name="fn", function="no_colon_here")


def test_builtin_kinds_resolve() -> None:
    assert teacher_class("final_answer") is FinalAnswerTeacher
    assert teacher_class("regex") is RegexTeacher
    assert teacher_class("json_schema") is JsonSchemaTeacher
    assert teacher_class("python") is PythonTeacher
    assert FinalAnswerTeacher.inline and RegexTeacher.inline and JsonSchemaTeacher.inline
    assert not PythonTeacher.inline
