"""``tgrs curate --dry-run``: an upper bound on paid calls and cost that is exact for the free stages
and for the cache, with no paid call made and nothing written.

The panel is the final-answer verifier, then two OpenAI judges (ranks 10 and 11) on the loopback
stand-in, whose brain passes a correct answer unless the reference is a multiple of 5. Every
expected figure is recomputed from the generated records. (``test_curate_api.py`` compares a dry
run with the real run that follows it; here the cache is partly filled and part of the input is done.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.cli import main as cli_main
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.testing.standin import StandIn, default_brain

pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "TGRS_TEST_DRYRUN_KEY"
N, HALF, SEED = 60, 30, 6


def brain(prompt: str) -> dict[str, Any]:
    out = default_brain(prompt)
    ref = re.findall(r"<reference>(.*?)</reference>", prompt, re.S)
    if out["passed"] and ref and int(ref[-1].strip()) % 5 == 0:
        return {"score": 3, "passed": False, "rationale": "a multiple of five"}
    return out


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-dryrun-0000")


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """The full input (N records) and its first HALF lines as a file of their own."""
    full = write_synthetic(tmp_path / "in.jsonl", N, seed=SEED)
    lines = full.read_text().splitlines(keepends=True)
    half = tmp_path / "half.jsonl"
    half.write_text("".join(lines[:HALF]))
    return full, half, [json.loads(x) for x in lines]


def good(rec: dict[str, Any]) -> bool:
    """What the final_answer verifier (and the judges' brain) call a correct answer."""
    m = re.findall(r"Answer:\s*(-?\d+)", rec["messages"][-1]["content"] or "")
    return bool(m) and int(m[-1]) == rec["reference"]


def write_panel(tmp_path: Path, srv: StandIn) -> Path:
    lines = ['policy = "unanimous"', "", "[[teacher]]", 'name = "answer"', 'kind = "final_answer"', "cost_rank = 0"]
    for name, rank in (("gpt_a", 10), ("gpt_b", 11)):
        t = {"include": str(ROOT / "teachers" / "openai-judge.toml"), "name": name, "cost_rank": rank,
             "base_url": srv.url_openai, "api_key_env": KEY_ENV, "rpm": 12000, "tpm": 10_000_000}
        lines += ["", "[[teacher]]", *(f"{k} = {json.dumps(v)}" for k, v in t.items())]
    p = tmp_path / "panel.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def tgrs(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    rc = cli_main(["curate", *args, "--quiet", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return dict(json.loads(captured.out))


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_free_stages_decide_exactly_and_no_paid_call_is_made(
        tmp_path: Path, data: tuple[Path, Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    full, _, recs = data
    with full.open("a") as f:  # lines set aside: not JSON, and an id used twice
        f.write("not json\n" + json.dumps(recs[0]) + "\n")
    n_good = sum(map(good, recs))
    assert 0 < n_good < N
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        dry = tgrs(capsys, str(full), "--panel", str(panel), "--out", str(tmp_path / "dry"), "--dry-run",
                   "--cache", str(tmp_path / "ledger.sqlite"))
        assert srv.stats["requests"] == 0
    assert not (tmp_path / "dry").exists()
    assert (dry["candidates"], dry["invalid"], dry["already_done"]) == (N, 2, 0)
    assert dry["decided_without_paid_calls"] == N - n_good  # the verifier really ran
    a, b = dry["teachers"]["gpt_a"], dry["teachers"]["gpt_b"]
    assert set(dry["teachers"]) == {"gpt_a", "gpt_b"}  # free teachers cost nothing and are not listed
    assert a["calls"] == n_good  # exact: the verifier's passes all reach the first judge
    assert b["calls"] == n_good  # an upper bound: gpt_a's unknown verdicts might all pass
    assert a["cache_hits"] == b["cache_hits"] == 0
    assert a["input_tokens"] > 0 and a["output_tokens"] > 0 and a["cost_usd"] > 0
    assert dry["paid_calls_at_most"] == 2 * n_good
    assert dry["cost_usd_at_most"] == pytest.approx(a["cost_usd"] + b["cost_usd"], abs=1e-6)


def test_cached_verdicts_are_used_exactly_and_done_candidates_are_not_counted(
        tmp_path: Path, data: tuple[Path, Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    full, half, recs = data
    first, second = recs[:HALF], recs[HALF:]
    first_good = [r for r in first if good(r)]
    first_a_rejects = [r for r in first_good if r["reference"] % 5 == 0]
    second_good = [r for r in second if good(r)]
    assert first_a_rejects and len(first_a_rejects) < len(first_good) and second_good
    ledger = str(tmp_path / "ledger.sqlite")
    done_dir = tmp_path / "half-run"
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        real = tgrs(capsys, str(half), "--panel", str(panel), "--out", str(done_dir), "--cache", ledger)
        assert real["failed"] == 0 and real["teachers"]["gpt_b"]["calls"] == len(first_good) - len(first_a_rejects)
        paid = srv.stats["requests"]

        dry = tgrs(capsys, str(full), "--panel", str(panel), "--out", str(tmp_path / "dry"), "--dry-run",
                   "--cache", ledger)
        a, b = dry["teachers"]["gpt_a"], dry["teachers"]["gpt_b"]
        assert a["cache_hits"] == len(first_good) and a["calls"] == len(second_good)
        # a cached rejection by gpt_a saves gpt_b exactly as in a real run: neither a call nor a hit
        assert b["cache_hits"] == len(first_good) - len(first_a_rejects)
        assert b["calls"] == len(second_good)
        assert dry["decided_without_paid_calls"] == N - len(second_good)
        assert dry["paid_calls_at_most"] == 2 * len(second_good)
        assert srv.stats["requests"] == paid

        # a run of the full input killed half way: only the decisions of the first half survived
        killed = tmp_path / "killed"
        tgrs(capsys, str(full), "--panel", str(panel), "--out", str(killed), "--no-cache")
        for name in ("accepted", "rejected"):
            p = killed / f"{name}.jsonl"
            p.write_text("".join(x for x in p.read_text().splitlines(keepends=True)
                                 if json.loads(x)["line"] <= HALF))
        paid = srv.stats["requests"]
        before = snapshot(killed)
        resumed = tgrs(capsys, str(full), "--panel", str(panel), "--out", str(killed), "--dry-run",
                       "--cache", ledger)
        assert (resumed["already_done"], resumed["candidates"]) == (HALF, N - HALF)
        assert resumed["teachers"]["gpt_a"]["cache_hits"] == 0  # only the not-done half is counted
        assert resumed["paid_calls_at_most"] == dry["paid_calls_at_most"]
        assert srv.stats["requests"] == paid  # no dry run made a request
    assert snapshot(killed) == before  # and none changed the run directory


def test_a_dry_run_on_a_directory_the_real_run_would_refuse_says_so(
        tmp_path: Path, data: tuple[Path, Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    full, half, _ = data
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        tgrs(capsys, str(half), "--panel", str(panel), "--out", str(tmp_path / "half-run"), "--no-cache")
        real = cli_main(["curate", str(full), "--panel", str(panel), "--out", str(tmp_path / "half-run"),
                         "--quiet", "--json", "--no-cache"])
        assert real == 2 and "another input" in capsys.readouterr().err
        dry = cli_main(["curate", str(full), "--panel", str(panel), "--out", str(tmp_path / "half-run"),
                        "--quiet", "--json", "--no-cache", "--dry-run"])
        err = capsys.readouterr().err
    assert dry == 2 and "another input" in err  # not "already_done": 30 of a run it would not continue


def test_the_dry_run_reads_with_the_input_format_the_run_is_given(
        tmp_path: Path, data: tuple[Path, Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON array of records without ids: ``auto`` would read it as fine-tuning records (ids minted);
    with ``--input-format openai`` (ids required) the run sets every record aside, and the dry run says so."""
    _, _, recs = data
    arr = tmp_path / "no-ids.json"
    arr.write_text(json.dumps([{k: v for k, v in r.items() if k not in ("id", "task_id")} for r in recs[:8]]))
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        base = [str(arr), "--panel", str(panel), "--no-cache"]
        auto = tgrs(capsys, *base, "--out", str(tmp_path / "a"), "--dry-run")
        dry = tgrs(capsys, *base, "--out", str(tmp_path / "b"), "--dry-run", "--input-format", "openai")
        real = tgrs(capsys, *base, "--out", str(tmp_path / "b"), "--input-format", "openai")
        assert srv.stats["requests"] == 0
    assert (auto["candidates"], auto["invalid"]) == (8, 0)
    assert (dry["candidates"], dry["invalid"], dry["paid_calls_at_most"]) == (0, 8, 0)
    assert (real["input_format"], real["valid"], real["invalid"]) == ("openai", 0, 8)
    # on the run directory it made, a dry run with another reader is refused as the run would be
    rc = cli_main(["curate", *base, "--out", str(tmp_path / "b"), "--quiet", "--json", "--dry-run"])
    assert rc == 2 and "it read its input as 'openai'" in capsys.readouterr().err


def test_a_dry_run_on_a_directory_of_trajectories_counts_what_the_run_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = json.loads((ROOT / "tests" / "formats" / "fixtures" / "swe_agent.traj").read_text())
    root = tmp_path / "trajs"
    for name in ("a-1", "b-2", "c-3"):
        (root / name).mkdir(parents=True)
        (root / name / f"{name}.traj").write_text(json.dumps(
            {**fixture, "replay_config": {"problem_statement": {"id": name}}}))
    (root / "d-4.traj").write_text('{"history": [')  # cut short: set aside, the others still read
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        base = [str(root), "--panel", str(panel), "--no-cache", "--input-format", "swe-agent"]
        dry = tgrs(capsys, *base, "--out", str(tmp_path / "run"), "--dry-run")
        assert srv.stats["requests"] == 0
        real = tgrs(capsys, *base, "--out", str(tmp_path / "run"))
    assert (dry["candidates"], dry["invalid"]) == (real["valid"], real["invalid"]) == (3, 1)
    for name in ("gpt_a", "gpt_b"):  # an upper bound on what the run then paid
        assert real["teachers"][name]["calls"] <= dry["teachers"][name]["calls"]


def test_a_repeated_judge_is_bounded_as_k_paid_calls_per_candidate_and_never_called(
        tmp_path: Path, data: tuple[Path, Path, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    full, _, recs = data
    n_good = sum(map(good, recs))
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        text = panel.read_text().replace('name = "gpt_b"', 'name = "gpt_b"\nrepeats = 3\ntemperature = 0.7')
        panel.write_text(text)
        dry = tgrs(capsys, str(full), "--panel", str(panel), "--out", str(tmp_path / "dry"), "--dry-run")
        assert srv.stats["requests"] == 0  # a repeated seat is as paid as a single one
    a, b = dry["teachers"]["gpt_a"], dry["teachers"]["gpt_b"]
    assert a["calls"] == n_good
    assert b["calls"] == 3 * n_good  # every repeat counts: the upper bound of k calls a candidate
    assert b["cost_usd"] == pytest.approx(3 * a["cost_usd"], rel=0.02)
    assert dry["paid_calls_at_most"] == 4 * n_good
