"""``tgrs curate`` on a non-JSONL input: a tau-bench JSON array (record positions), with the recorded
reward as the free first teacher; killed mid-run and resumed, it ends exactly like an uninterrupted
run. Also: the reader is said and recorded, a run read with another reader is refused, and a run that
sets aside too much says so."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from format_kit import cmd, count, decided, kill_after, panel

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate

N = 1200


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRS_CACHE_DIR", str(tmp_path / "cache"))


def tau_results(path: Path, n: int) -> Path:
    """``n`` tau-bench results; every 7th has a reward of 0, every 10th a final answer the checker refuses,
    every 97th no assistant turn at all (set aside)."""
    out = []
    for i in range(n):
        final = "Your booking is cancelled." if i % 10 else "I could not do it."
        traj = [{"role": "user", "content": f"Cancel booking {i}."},
                {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function",
                 "function": {"name": "cancel", "arguments": json.dumps({"booking": i})}}]},
                {"role": "tool", "tool_call_id": f"c{i}", "content": "ok"},
                {"role": "assistant", "content": final}]
        if i % 97 == 96:
            traj = traj[:1]
        out.append({"task_id": i // 2, "trial": i % 2, "reward": 0.0 if i % 7 == 0 else 1.0,
                    "info": {"reward_info": {"reward": 0.0 if i % 7 == 0 else 1.0}}, "traj": traj})
    path.write_text(json.dumps(out, indent=1))
    return path


def test_kill_and_resume_on_a_json_array_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    inp, pnl = tau_results(tmp_path / "results.json", N), panel(tmp_path)
    whole = tmp_path / "whole"
    summary = asyncio.run(curate(inp, load_panel(pnl), whole, input_format="auto"))
    assert summary["input_format"] == "tau-bench" and summary["input_lines"] == N
    want = decided(whole)
    bad = {i + 1 for i in range(N) if i % 97 == 96}
    assert {line for line, _ in want["invalid"]} == bad
    rewarded_and_right = {i + 1 for i in range(N) if i % 7 and i % 10 and i + 1 not in bad}
    assert {line for line, _ in want["accepted"]} == rewarded_and_right
    assert summary["teachers"]["reward"]["calls"] == N - len(bad)  # the free stage saw every candidate ...
    assert summary["teachers"]["slow"]["calls"] == sum(1 for i in range(N) if i % 7 and i + 1 not in bad)  # ... first

    out = tmp_path / "killed"
    kill_after(cmd(inp, pnl, out), out)
    got_before = count(out)
    assert 0 < got_before < N - len(bad)
    assert json.loads((out / "input-format.json").read_text()) == {"format": "tau-bench", "unit": "record"}
    done = subprocess.run(cmd(inp, pnl, out, "--json"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "input format tau-bench (auto: a JSON array: records have 'traj' and 'reward'" in done.stderr
    resumed = json.loads(done.stdout)
    assert decided(out) == want
    keys = ("input_lines", "valid", "accepted", "rejected", "invalid", "pending", "input_format", "set_aside_share")
    assert {k: resumed[k] for k in keys} == {k: summary[k] for k in keys}
    journal = [json.loads(ln) for ln in (out / "verdicts.jsonl").read_text().splitlines() if ln.strip()]
    twice = [k for k, n in Counter((v["line"], v["teacher"]) for v in journal).items() if n > 1]
    assert not twice, f"verdicts paid twice across the kill: {twice[:5]}"


def test_a_run_read_with_another_reader_is_refused_then_forced(tmp_path: Path) -> None:
    inp, pnl = tau_results(tmp_path / "results.json", 30), panel(tmp_path)
    out = tmp_path / "run"
    assert subprocess.run(cmd(inp, pnl, out), capture_output=True, text=True, timeout=120).returncode == 0
    again = subprocess.run(cmd(inp, pnl, out, "--input-format", "openai"), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2
    assert "it read its input as 'tau-bench'" in again.stderr and "--input-format tau-bench" in again.stderr
    forced = subprocess.run(cmd(inp, pnl, out, "--input-format", "openai", "--force", "--json"),
                            capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    s = json.loads(forced.stdout)
    assert s["input_format"] == "openai" and s["invalid"] == 30  # tau results are not OpenAI records
    assert any(p.name.startswith("archive-") for p in out.iterdir())


def test_setting_aside_too_much_is_said_at_the_end(tmp_path: Path) -> None:
    pnl = panel(tmp_path)
    recs: list[dict[str, Any]] = [{"conversations": [{"from": "human", "value": f"q{i}"},
                                                     {"from": "gpt", "value": "" if i % 3 else f"a{i}"}]}
                                  for i in range(12)]
    inp = tmp_path / "sg.json"
    inp.write_text(json.dumps(recs))
    out = tmp_path / "run"
    s = asyncio.run(curate(inp, load_panel(pnl), out, options=CurateOptions(max_set_aside=0.5)))
    assert s["input_format"] == "sharegpt" and s["invalid"] == 8 and s["set_aside_share"] == pytest.approx(8 / 12, 1e-3)
    assert "8 of 12 records (67%) were set aside, more than 50%" in s["set_aside_warning"]
    shown = subprocess.run(cmd(inp, pnl, tmp_path / "run2"), capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "warning: 8 of 12 records (67%) were set aside, more than 20%" in shown.stdout
    inv = [json.loads(ln) for ln in (out / "invalid.jsonl").read_text().splitlines()]
    assert {r["field"] for r in inv} == {"messages[1].content"} and all(r["file"] == str(inp) for r in inv)
    quiet = asyncio.run(curate(inp, load_panel(pnl), tmp_path / "run3", options=CurateOptions(max_set_aside=0.7)))
    assert quiet["set_aside_warning"] is None
