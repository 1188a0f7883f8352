"""``auto`` on every real sample file in the shared data folder (skipped, saying so, when it is absent):
the reader it picks, how many candidates are valid and set aside, and tool calls paired in each."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_kit import assert_paired, read

from tgrs_agents.formats import resolve

# file -> (reader auto must pick, candidates valid, records set aside)
EXPECTED = {
    "claude-code-jsonl/short.jsonl": ("claude-code", 1, 0),
    "claude-code-jsonl/tool_heavy.jsonl": ("claude-code", 1, 0),
    "hf-dolci-tool-use/dolci_tool_use.sample_raw.first3.json": ("dolci", 3, 0),
    "inspect-ai-log/2025-05-12T20-27-36-04-00_browser.json": ("inspect", 1, 0),
    "inspect-ai-log/log_read_sample.eval": ("inspect", 1, 0),
    "inspect-ai-log/log_read_sample.json": ("inspect", 1, 0),
    "inspect-ai-log/log_tool_call_error.json": ("inspect", 0, 1),  # tool messages only: no assistant turn
    "llamafactory-v1-messages/reason_tool_use_demo_50.jsonl": ("llamafactory", 50, 0),
    "mini-swe-agent/github_issue.traj.json": ("mini-swe-agent", 1, 0),
    "mini-swe-agent/local.traj.json": ("mini-swe-agent", 1, 0),
    "openai-ft-tools/drone_training.first6.jsonl": ("openai-ft", 6, 0),
    "openhands-events/basic.replay_trajectory.json": ("openhands", 1, 0),
    "openhands-events/multi_swe_bench_output.line2.jsonl": ("openhands", 1, 0),
    # records 5 and 7 are the same conversation: the id minted from the content sets the repeat aside
    "sharegpt-toolcall/glaive_toolcall_en_demo.first40.json": ("sharegpt", 39, 1),
    "swe-agent-traj/marshmallow-1867.function_calling.traj": ("swe-agent", 1, 0),
    "swe-agent-traj/sweagenttestrepo-1c2844.gpt4.thought_action.traj": ("swe-agent", 1, 0),
    "tau-bench/gpt-4o-airline.excerpt.json": ("tau-bench", 2, 0),
}


def test_every_sample_file_is_listed(real: Path) -> None:
    files = {str(p.relative_to(real)) for p in real.rglob("*") if p.is_file() and p.name != "README.md"}
    assert files == set(EXPECTED), "a sample file was added or removed: list it in EXPECTED"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_auto_reads_the_real_sample(real: Path, tmp_path: Path, name: str) -> None:
    fmt, valid, set_aside = EXPECTED[name]
    path = real / name
    assert resolve(path)[0].name == fmt
    good, bad = read(path, tmp_path)
    assert (len(good), len(bad)) == (valid, set_aside), [b.reason for b in bad.values()]
    for c in good.values():
        assert_paired(c)
        assert c.final_message is not None and (c.final_text.strip() or c.final_message.tool_calls)


def test_double_encoded_arguments_in_the_real_fine_tuning_file_are_decoded(real: Path, tmp_path: Path) -> None:
    good, _ = read(real / "openai-ft-tools/drone_training.first6.jsonl", tmp_path)
    assert [len(c.metadata.get("normalized", [])) for c in good.values()] == [0, 0, 1, 1, 1, 1]
    args = good[3].messages[-1].tool_calls[0].function.arguments  # type: ignore[index]
    assert args == '{"location": "current"}'


def test_inspect_scores_and_tau_rewards_reach_metadata(real: Path, tmp_path: Path) -> None:
    good, _ = read(real / "inspect-ai-log/log_read_sample.eval", tmp_path)
    assert good[1].metadata["score"] == {"match": 1.0} and good[1].reference == " Yes"
    good, _ = read(real / "tau-bench/gpt-4o-airline.excerpt.json", tmp_path)
    assert [c.metadata["reward"] for c in good.values()] == [1.0, 0.0]
