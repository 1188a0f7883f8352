"""Panel files: loading, includes, errors that name file and field, fingerprints, to_toml."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from tgrs_agents.curation.panel_file import PanelConfig, load_panel, panel_from_dict
from tgrs_agents.errors import ConfigError

GOOD = """
policy = "k_of_n"
k = 2

[[teacher]]
name = "judge"
kind = "python"
function = "tgrs_agents.teachers.checks:answer_matches_tool"
cost_rank = 2

[[teacher]]
name = "format"
kind = "regex"
pattern = 'Answer:\\s*\\d'
cost_rank = 0

[[teacher]]
name = "answer"
kind = "final_answer"
cost_rank = 1

[[teacher]]
name = "shape"
kind = "json_schema"
schema = { type = "object", required = ["a"] }
cost_rank = 0
"""

REGEX = '[[teacher]]\nname = "fmt"\nkind = "regex"\npattern = "x"\n'


def write(tmp_path: Path, text: str, name: str = "panel.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load_error(tmp_path: Path, text: str) -> tuple[ConfigError, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_panel(path)
    msg = str(ei.value)
    assert str(path) in msg, msg  # every error names the file
    return ei.value, msg


# --------------------------------------------------------------------------------------------
# good files


def test_good_panel_sorted_by_cost_rank_stable(tmp_path: Path) -> None:
    cfg = load_panel(write(tmp_path, GOOD))
    assert [t.name for t in cfg.teachers] == ["format", "shape", "answer", "judge"]
    assert cfg.policy == "k_of_n" and cfg.k == 2
    assert cfg.source == str(tmp_path / "panel.toml")
    assert Path(cfg.base_dir) == tmp_path.resolve()
    policy = cfg.build_policy()
    assert policy.name == "k_of_n" and policy.k == 2
    assert set(policy.teachers) == {"format", "shape", "answer", "judge"}


def test_defaults(tmp_path: Path) -> None:
    cfg = load_panel(write(tmp_path, REGEX))
    assert cfg.policy == "unanimous"
    [t] = cfg.teachers
    assert t.cost_rank == 0 and t.max_concurrency == 64


def test_overrides_replace_top_level_keys(tmp_path: Path) -> None:
    cfg = load_panel(write(tmp_path, GOOD), overrides={"policy": "majority", "k": None})
    assert cfg.policy == "majority" and cfg.k == 2  # None means "not given"


def test_include_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    write(
        tmp_path / "shared",
        """
        name = "fmt"
        kind = "regex"
        pattern = "Answer:"
        flags = "i"
        cost_rank = 3
        """,
        "fmt.toml",
    )
    path = write(
        tmp_path,
        """
        [[teacher]]
        include = "shared/fmt.toml"
        pattern = "Final:"
        cost_rank = 0

        [[teacher]]
        include = "shared/fmt.toml"
        name = "fmt2"
        """,
    )
    cfg = load_panel(path)
    a, b = cfg.teachers
    assert (a.name, a.pattern, a.flags, a.cost_rank) == ("fmt", "Final:", "i", 0)
    assert (b.name, b.pattern, b.flags, b.cost_rank) == ("fmt2", "Answer:", "i", 3)


def test_missing_include(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, '[[teacher]]\ninclude = "nope.toml"\n')
    assert "field 'teacher[0].include'" in msg
    assert str(tmp_path / "nope.toml") in msg and "not found" in msg


def test_shipped_panel_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    cfg = load_panel(root / "teachers" / "panel-verifiers.toml")
    assert [t.name for t in cfg.teachers] == ["format", "answer", "consistent"]


# --------------------------------------------------------------------------------------------
# one test per bad field


def test_bad_toml_syntax(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'policy = "unanimous\n')
    assert "expected valid TOML" in msg and "line 1" in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="not found") as ei:
        load_panel(path)
    assert str(path) in str(ei.value)


@pytest.mark.parametrize("text", ['policy = "unanimous"\n', "teacher = []\n"])
def test_no_teachers(tmp_path: Path, text: str) -> None:
    err, msg = load_error(tmp_path, text)
    assert err.field == "teacher"
    assert "field 'teacher'" in msg and "at least one [[teacher]]" in msg


def test_teacher_not_a_table(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, "teacher = [1]\n")
    assert "field 'teacher[0]'" in msg and "expected a table" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'polcy = "majority"\n' + REGEX)
    assert "field 'polcy'" in msg and "unknown field" in msg and "policy" in msg


def test_unknown_teacher_kind(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, REGEX + '[[teacher]]\nname = "b"\nkind = "oracle"\n')
    assert "field 'teacher[1].kind'" in msg
    assert "unknown teacher kind 'oracle'" in msg and "final_answer" in msg


def test_missing_kind(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, '[[teacher]]\nname = "a"\n')
    assert "field 'teacher[0].kind'" in msg and "expected a teacher kind" in msg


def test_unknown_field_in_teacher(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, REGEX + "patern = 'y'\n")
    assert "teacher[0].patern" in msg and "unknown field" in msg and "'fmt'" in msg


def test_wrong_type(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, REGEX + 'cost_rank = "cheap"\n')
    assert "teacher[0].cost_rank" in msg and "valid integer" in msg and "'cheap'" in msg


def test_wrong_type_top_level(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'policy = "mean_score"\nthreshold = "high"\n' + REGEX)
    assert "field 'threshold'" in msg and "valid number" in msg


def test_missing_required_field(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, '[[teacher]]\nname = "a"\nkind = "regex"\n')
    assert "teacher[0].pattern" in msg and "required field is missing" in msg


def test_invalid_regex(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, REGEX + '[[teacher]]\nname = "b"\nkind = "regex"\npattern = "(a"\n')
    assert "teacher[1].pattern" in msg and "expected a Python regular expression" in msg


def test_invalid_regex_flags(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, REGEX + 'flags = "iz"\n')
    assert "teacher[0].flags" in msg and "imsx" in msg


def test_model_level_error_names_the_teacher_table(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, '[[teacher]]\nname = "j"\nkind = "json_schema"\n')
    assert "field 'teacher[0] (teacher 'j')'" in msg
    assert "exactly one of 'schema'" in msg


def test_duplicate_teacher_names(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, REGEX + REGEX.replace('"x"', '"y"'))
    assert "teacher.name" in msg and "unique teacher names" in msg and "fmt" in msg


def test_unknown_policy(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'policy = "plurality"\n' + REGEX)
    assert "field 'policy'" in msg and "expected one of" in msg and "'plurality'" in msg


def test_k_of_n_without_k(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'policy = "k_of_n"\n' + REGEX)
    assert "field 'k'" in msg and "needs an integer k between 1 and 1" in msg


def test_k_out_of_range(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'policy = "k_of_n"\nk = 5\n' + REGEX)
    assert "field 'k'" in msg and "got 5" in msg


def test_mean_score_without_threshold(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, 'policy = "mean_score"\n' + REGEX)
    assert "field 'threshold'" in msg and "threshold between 0 and 1" in msg


def test_weights_mismatch(tmp_path: Path) -> None:
    _, msg = load_error(
        tmp_path, 'policy = "weighted_mean"\nthreshold = 0.5\nweights = { other = 1.0 }\n' + REGEX
    )
    assert "field 'weights'" in msg and "one weight per teacher" in msg
    assert "missing: fmt" in msg and "unknown teachers: other" in msg


def test_weights_non_positive(tmp_path: Path) -> None:
    _, msg = load_error(
        tmp_path, 'policy = "weighted_mean"\nthreshold = 0.5\nweights = { fmt = 0.0 }\n' + REGEX
    )
    assert "field 'weights'" in msg and "positive" in msg


def test_errors_keep_file_and_field_attributes(tmp_path: Path) -> None:
    err, _ = load_error(tmp_path, REGEX + 'cost_rank = "cheap"\n')
    assert err.file == str(tmp_path / "panel.toml")
    assert err.field is not None and err.field.startswith("teacher[0].cost_rank")


# --------------------------------------------------------------------------------------------
# fingerprint and to_toml


def fp(tmp_path: Path, text: str) -> str:
    return load_panel(write(tmp_path, text)).fingerprint()


def test_fingerprint_ignores_operational_fields(tmp_path: Path) -> None:
    base = fp(tmp_path, GOOD)
    assert fp(tmp_path, GOOD) == base
    reranked = GOOD.replace("cost_rank = 2", "cost_rank = 9").replace("cost_rank = 0\n", "cost_rank = 5\n", 1)
    assert reranked != GOOD
    assert fp(tmp_path, reranked) == base
    throttled = GOOD.replace("cost_rank = 1\n", "cost_rank = 1\nmax_concurrency = 3\n")
    assert fp(tmp_path, throttled) == base


def test_fingerprint_tracks_what_decides(tmp_path: Path) -> None:
    base = fp(tmp_path, GOOD)
    assert fp(tmp_path, GOOD.replace("Answer:", "Final:")) != base  # pattern
    assert fp(tmp_path, GOOD.replace('policy = "k_of_n"\nk = 2', 'policy = "unanimous"')) != base
    assert fp(tmp_path, GOOD.replace("\nk = 2\n", "\nk = 3\n")) != base
    assert fp(tmp_path, GOOD.replace('required = ["a"]', 'required = ["b"]')) != base
    assert fp(tmp_path, GOOD.replace('name = "answer"', 'name = "answer2"')) != base


def test_to_toml_round_trips(tmp_path: Path) -> None:
    cfg = load_panel(write(tmp_path, GOOD.replace("\nk = 2\n", "\nk = 2\nbest_k = 1\n")))
    text = cfg.to_toml()
    assert cfg.fingerprint() in text
    doc = tomllib.loads(text)
    again = panel_from_dict(doc, base_dir=tmp_path)
    assert isinstance(again, PanelConfig)
    assert again.fingerprint() == cfg.fingerprint()
    assert again.teachers == cfg.teachers
    assert again.best_k == 1
    shape = next(t for t in again.teachers if t.name == "shape")
    assert shape.json_schema == {"type": "object", "required": ["a"]}


def test_to_toml_round_trips_weights(tmp_path: Path) -> None:
    text = (
        'policy = "weighted_mean"\nthreshold = 0.6\nweights = { fmt = 2.0, ans = 1.0 }\n'
        + REGEX
        + '[[teacher]]\nname = "ans"\nkind = "final_answer"\nrel_tol = 0.01\n'
    )
    cfg = load_panel(write(tmp_path, text))
    again = panel_from_dict(tomllib.loads(cfg.to_toml()), base_dir=tmp_path)
    assert again.fingerprint() == cfg.fingerprint()
    assert again.weights == {"fmt": 2.0, "ans": 1.0} and again.threshold == 0.6


def test_a_panel_whose_policy_names_other_teachers_is_a_config_error(tmp_path: Path) -> None:
    from tgrs_agents.curation.panel import Panel
    from tgrs_agents.curation.policy import make_policy
    from tgrs_agents.teachers.base import BuildContext, teacher_class

    cfg = load_panel(write(tmp_path, REGEX))
    teachers = [teacher_class(t.kind)(t, BuildContext(base_dir=tmp_path)) for t in cfg.teachers]
    with pytest.raises(ConfigError, match="differ from panel"):
        Panel(teachers, make_policy("unanimous", ["someone_else"]))


def test_one_error_translation_for_config_files_and_input_records() -> None:
    from pydantic import BaseModel, ConfigDict, ValidationError

    from tgrs_agents.curation.ingest import Invalid, parse_line
    from tgrs_agents.curation.panel_file import pydantic_problem

    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        when: str | list[int] = "now"

    class Outer(BaseModel):
        inner: Inner = Inner()

    def problem(data: object, **kw: str) -> tuple[str | None, str]:
        with pytest.raises(ValidationError) as ei:
            Outer.model_validate(data)
        return pydantic_problem(ei.value, **kw)

    # union member tags ("str", "list[int]") never show in the field path
    assert problem({"inner": {"when": 3.5}})[0] == "inner.when"
    assert problem({"inner": 3}, obj="a table") == ("inner", "expected a table; got int")
    assert problem({"inner": 3}) == ("inner", "expected a JSON object; got int")
    assert problem({"inner": {"wen": 1}}) == ("inner.wen", "unknown field (not one this kind takes)")
    inv = parse_line(b'{"id": "a", "messages": [{"role": "robot", "content": "x"}]}', 3, "in.jsonl")
    assert isinstance(inv, Invalid) and inv.field == "messages[0].role"


# --------------------------------------------------------------------------------------------
# the jury keys (issue 16)

JUDGE = '''
[[teacher]]
name = "{name}"
kind = "openai"
model = "{model}"
api_key_env = "TGRS_TEST_NO_KEY"
price_input_per_mtok = 1.0
price_output_per_mtok = 1.0
'''


def judges(*pairs: tuple[str, str], extra: str = "") -> str:
    return extra + "".join(JUDGE.format(name=n, model=m) for n, m in pairs)


def test_seat_roles_and_jury_keys_load_and_round_trip(tmp_path: Path) -> None:
    text = judges(("a", "gpt-4o-mini"), ("b", "claude-haiku-4-5"), ("strong", "o3"), ("spare", "gpt-4o"),
                  extra='policy = "majority"\nties = "escalate"\nmargin = 0.1\nmin_successful = 2\n'
                        'reserve = ["spare"]\naudit = 0.05\n')
    text = text.replace('name = "strong"', 'name = "strong"\nescalate_only = true\nrepeats = 3')
    cfg = load_panel(write(tmp_path, text))
    assert cfg.role("strong").escalate_only and cfg.role("strong").repeats == 3 and cfg.role("a").repeats == 1
    assert cfg.reserve == ("spare",) and cfg.warnings == ()  # three seats: no tie warning
    policy = cfg.build_policy()
    assert policy.teachers == ("a", "b", "strong") and policy.escalate == ("strong",)
    assert (policy.ties, policy.margin, policy.quorum) == ("escalate", 0.1, 2)
    assert cfg.audit_share() == 0.05
    assert not hasattr(cfg.teachers[2], "escalate_only")  # a role of the seat, not a teacher field
    again = panel_from_dict(tomllib.loads(cfg.to_toml()), base_dir=tmp_path)
    assert again.fingerprint() == cfg.fingerprint() and again.roles == cfg.roles
    # a role changes the panel (what decides) but never a teacher's cache identity
    plain = load_panel(write(tmp_path, text.replace("repeats = 3", ""), "plain.toml"))
    assert plain.fingerprint() != cfg.fingerprint()
    assert plain.teachers[2].identity() == cfg.teachers[2].identity()


def test_panels_without_jury_keys_keep_their_fingerprint(tmp_path: Path) -> None:
    cfg = load_panel(write(tmp_path, GOOD))
    assert set(cfg.identity()) == {"policy", "k", "threshold", "weights", "best_k", "teachers"}


def test_an_even_majority_without_a_tie_rule_warns_at_load_time(tmp_path: Path) -> None:
    even = judges(("a", "gpt-4o"), ("b", "claude-haiku-4-5"), extra='policy = "majority"\n')
    cfg = load_panel(write(tmp_path, even))
    (w,) = cfg.warnings
    assert "2 seats can end in a tie (1 against 1)" in w and str(tmp_path / "panel.toml") in w
    assert load_panel(write(tmp_path, 'ties = "reject"\n' + even)).warnings == ()


@pytest.mark.parametrize(("extra", "field", "match"), [
    ('policy = "majority"\nties = "coin"\n', "ties", "expected one of"),
    ('policy = "majority"\nties = "escalate"\n', "ties", "escalate_only"),
    ('policy = "majority"\nmin_successful = 5\n', "min_successful", "between 1 and 2"),
    ('policy = "majority"\nreserve = ["nobody"]\n', "reserve", "not a teacher"),
    ('policy = "majority"\nreserve = "b"\n', "reserve", "list of teacher names"),
    ('policy = "majority"\nweights = "auto"\n', "weights", "needs policy"),
    ('policy = "weighted_mean"\nthreshold = 0.5\nweights = "cal.json"\n', "weights", "calibration file not found"),
    ('policy = "majority"\naudit = 2\n', "audit", "between 0 and 1"),
    ('policy = "majority"\nmargin = 0.9\n', "margin", "margin between"),
])
def test_jury_key_errors_name_file_and_field(tmp_path: Path, extra: str, field: str, match: str) -> None:
    err, msg = load_error(tmp_path, judges(("a", "gpt-4o"), ("b", "claude-haiku-4-5"), extra=extra))
    assert err.field == field and match in msg


def test_role_errors_name_the_teacher_table(tmp_path: Path) -> None:
    err, msg = load_error(tmp_path, judges(("a", "gpt-4o")).replace('name = "a"', 'name = "a"\nrepeats = 0'))
    assert err.field == "teacher[0].repeats" and "greater than or equal to 1" in msg
    err, msg = load_error(tmp_path, REGEX.replace('name = "fmt"', 'name = "fmt"\nrepeats = 3'))
    assert err.field == "teacher.fmt.repeats" and "needs a judge with a seed" in msg


def test_weights_auto_and_a_calibration_file(tmp_path: Path) -> None:
    base = judges(("a", "gpt-4o"), ("b", "claude-haiku-4-5"), ("c", "o3"))
    auto = load_panel(write(tmp_path, 'policy = "weighted_mean"\nthreshold = 0.5\nweights = "auto"\n' + base))
    p = auto.build_policy()
    assert p.reliability is not None and p.reliability.source == "prior" and auto.audit_share() == 0.1
    rate = {"value": 0.9, "low": 0.8, "high": 0.95, "n": 100}
    cal = {"prevalence": 0.4, "teachers": {t: {"sensitivity": rate, "specificity": rate} for t in "abc"}}
    (tmp_path / "cal.json").write_text(__import__("json").dumps(cal))
    frozen = load_panel(write(tmp_path, 'policy = "weighted_mean"\nthreshold = 0.5\nweights = "cal.json"\n' + base))
    p = frozen.build_policy()
    assert p.reliability is not None and p.reliability.prevalence == 0.4 and frozen.audit_share() == 0.0
    assert p.reliability.of("a").sensitivity.value == 0.9
    fp = frozen.fingerprint()  # the calibration's content is part of the panel's identity
    cal["prevalence"] = 0.5
    (tmp_path / "cal.json").write_text(__import__("json").dumps(cal))
    assert load_panel(tmp_path / "panel.toml").fingerprint() != fp
    (tmp_path / "cal.json").write_text('{"teachers": {"a": {}}, "prevalence": 0.5}')
    err, _ = load_error(tmp_path, 'policy = "weighted_mean"\nthreshold = 0.5\nweights = "cal.json"\n' + base)
    assert err.field == "weights"


def test_a_judge_of_the_students_family_is_refused_unless_allowed(tmp_path: Path) -> None:
    text = judges(("grader", "qwen2.5-72b-instruct"), ("other", "gpt-4o-mini"))
    err, msg = load_error(tmp_path, 'student_model = "Qwen/Qwen2.5-7B-Instruct"\n' + text)
    assert err.field == "teacher[0].model" and "same model family (qwen)" in msg
    assert "allow_self_judging = true" in msg and "'grader'" in msg
    ok = load_panel(write(tmp_path, 'student_model = "Qwen/Qwen2.5-7B-Instruct"\n'
                          + text.replace('name = "grader"', 'name = "grader"\nallow_self_judging = true')))
    assert ok.role("grader").allow_self_judging
    # the same refusal from the command line's --student-model (an override) and for a generator
    path = write(tmp_path, text, "plain.toml")
    assert load_panel(path).student_model is None
    with pytest.raises(ConfigError, match="same model family"):
        load_panel(path, overrides={"student_model": "qwen3-8b"})
    with pytest.raises(ConfigError, match=r"same model family \(gpt\)"):
        load_panel(path, overrides={"student_model": ["llama-3.1-8b", "openai/gpt-4.1-nano"]})
    load_panel(path, overrides={"student_model": "runs/demo/round-0/model"})  # unknown family: allowed


def test_shipped_jury_panel_loads() -> None:
    cfg = load_panel(Path(__file__).resolve().parents[2] / "teachers" / "panel-jury.toml")
    p = cfg.build_policy()
    assert p.reliability is not None and p.escalate == ("strong_judge",) and p.quorum == 2
    assert cfg.reserve == ("backup_judge",) and "backup_judge" not in p.teachers
    assert cfg.gold_names() == ["answer"] and cfg.role("gpt_judge").repeats == 3 and cfg.audit_share() == 0.1
    assert cfg.warnings == ()


def test_the_guard_also_runs_when_the_loop_names_the_student_after_loading(tmp_path: Path) -> None:
    from tgrs_agents.curation.panel import Panel

    cfg = load_panel(write(tmp_path, judges(("grader", "claude-sonnet-4-5"))))
    with pytest.raises(ConfigError, match=r"same model family \(claude\)"):
        Panel.from_config(cfg.model_copy(update={"student_model": "claude-haiku-4-5"}))
