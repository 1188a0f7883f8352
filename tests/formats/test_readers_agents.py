"""The agent-log readers on hand-written fixtures: inspect (.json and .eval), swe-agent, mini-swe-agent,
openhands (event list and output.jsonl) and tau-bench."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from format_kit import FIXTURES, assert_paired, calls, extra, read, roles

from tgrs_agents.formats import resolve


def test_inspect_json_one_candidate_per_sample_and_epoch(tmp_path: Path) -> None:
    fmt, why = resolve(FIXTURES / "inspect.json")
    assert fmt.name == "inspect" and "Inspect" in why
    good, bad = read(FIXTURES / "inspect.json", tmp_path)
    assert not bad and [c.id for c in good.values()] == ["arith:1:1", "arith:1:2", "arith:2:1"]
    assert [c.task_id for c in good.values()] == ["arith:1", "arith:1", "arith:2"]  # epochs group by sample
    c = good[1]
    assert c.messages[0].content == "The calculator manual, long enough to be stored as an attachment."
    assert c.messages[2].content == "Calling calc."
    assert extra(c.messages[2], "reasoning_content") == "Use the tool."
    assert calls(c) == [("call_1_1", "calc", '{"expr": "2+2"}')]
    assert c.messages[3].name == "calc" and c.messages[3].tool_call_id == "call_1_1"
    assert c.reference == "4" and c.final_text == "Answer: 4"
    assert [g.metadata["score"]["match"] for g in good.values()] == [1.0, 0.0, 0.5]
    assert c.metadata["scores"]["match"]["value"] == "C" and c.metadata["model"] == "mock/model"
    assert c.metadata["sample_metadata"] == {"difficulty": "easy"} and "events" not in c.metadata
    for g in good.values():
        assert_paired(g)


def write_eval(path: Path) -> Path:
    """The fixture's log as Inspect's zipped .eval: header.json and one member per sample."""
    log = json.loads((FIXTURES / "inspect.json").read_text())
    samples = log.pop("samples")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("_journal/start.json", json.dumps({"version": 2, "eval": log["eval"]}))
        for s in samples:
            z.writestr(f"samples/{s['id']}_epoch_{s['epoch']}.json", json.dumps(s))
        z.writestr("header.json", json.dumps(log))
    return path


def test_inspect_eval_zip_reads_like_the_json_log(tmp_path: Path) -> None:
    path = write_eval(tmp_path / "log.eval")
    fmt, why = resolve(path)
    assert fmt.name == "inspect" and ".eval" in why
    got, bad = read(path, tmp_path)
    want, _ = read(FIXTURES / "inspect.json", tmp_path)
    assert not bad and [c.sft_record() for c in got.values()] == [c.sft_record() for c in want.values()]
    assert [c.metadata for c in got.values()] == [c.metadata for c in want.values()]


def test_swe_agent_traj(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "swe_agent.traj")[0].name == "swe-agent"
    good, bad = read(FIXTURES / "swe_agent.traj", tmp_path)
    c = good[1]
    assert not bad and c.id == "demo__repo-1" and roles(c) == ["system", "user", "assistant", "tool", "assistant",
                                                               "tool"]
    assert c.messages[3].tool_call_id == "call_ls" and c.metadata["more_tool_call_ids"] == {"3": ["call_cat"]}
    for m in c.messages:
        assert not {"thought", "action", "agent", "message_type", "tool_call_ids"} & set(m.model_extra or {})
    assert c.metadata["exit_status"] == "submitted" and c.metadata["steps"] == 1
    assert "edited_files30" not in c.metadata
    assert [x[1] for x in calls(c)] == ["bash", "bash", "submit"]


def test_mini_swe_agent(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "mini_swe_agent.traj.json")[0].name == "mini-swe-agent"
    good, bad = read(FIXTURES / "mini_swe_agent.traj.json", tmp_path)
    c = good[1]
    assert not bad and c.id.startswith("mini-swe-agent-")
    assert "```mswea_bash_command\necho hello\n```" in (c.messages[2].content or "")  # the action stays text
    assert all("extra" not in (m.model_extra or {}) for m in c.messages)
    assert c.metadata["exit_status"] == "Submitted" and c.metadata["action_format"] == "mswea_bash_command"


def test_openhands_event_list_with_model_responses(tmp_path: Path) -> None:
    good, bad = read(FIXTURES / "openhands_events.json", tmp_path)
    c = good[1]
    assert not bad and roles(c) == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert c.messages[2].content == "Two commands."  # one message per model response, not per action
    assert [x[:2] for x in calls(c)] == [("tc1", "execute_bash"), ("tc2", "execute_bash"), ("tc3", "finish")]
    assert [(m.tool_call_id, m.content) for m in c.messages[3:5]] == [("tc1", "/workspace"), ("tc2", "a.py")]
    assert c.final_text == "You are in /workspace."
    assert c.metadata["skipped_events"] == {"recall": 1, "agent_state_changed": 1}
    assert_paired(c)


def test_openhands_output_jsonl_without_model_responses(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "openhands_output.jsonl")[0].name == "openhands"
    good, bad = read(FIXTURES / "openhands_output.jsonl", tmp_path)
    c = good[1]
    assert not bad and c.id == "demo__repo-7"
    assert roles(c) == ["user", "assistant", "tool", "user", "assistant"]
    assert c.messages[1].content == "Run the tests."
    assert calls(c) == [("oh_1", "run", '{"command": "make test"}')] and c.messages[2].content == "1 failed"
    assert c.messages[3].content == "Parameter 'command' is missing."  # an error the model was shown
    assert c.metadata["resolved"] is True and c.metadata["metrics"] == {"accumulated_cost": 0.5}
    assert "api_key" not in c.metadata["run_metadata"]["llm_config"]
    assert_paired(c)


def test_tau_bench_keeps_the_reward(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "tau_bench.json")[0].name == "tau-bench"
    good, bad = read(FIXTURES / "tau_bench.json", tmp_path)
    assert not bad and [c.id for c in good.values()] == ["tau-3-trial-0", "tau-3-trial-1"]
    assert {c.task_id for c in good.values()} == {"3"}
    assert [c.metadata["reward"] for c in good.values()] == [1.0, 0.0]
    assert good[1].metadata["info"]["reward_info"] == {"reward": 1.0}
    assert good[1].final_text == "Your booking is cancelled."
    assert_paired(good[1])
