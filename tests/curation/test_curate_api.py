"""``tgrs curate`` with a verifier and two paid judges (OpenAI, Anthropic) against the stand-in.

The command line runs in-process (``tgrs_agents.cli.main``) with the keys in test environment
variables; the stand-in serves from a thread. Every expectation is recomputed from the generated
records: the ``final_answer`` verifier passes a candidate iff its ``Answer: N`` equals the
reference, and the stand-in's judges (a brain defined here) pass those too, except when the
reference is a multiple of 5, so the OpenAI judge's rejections also save Anthropic calls.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.cli import main as cli_main
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.testing.standin import FaultPlan, StandIn, default_brain

pytest.importorskip("openai")
pytest.importorskip("anthropic")

ROOT = Path(__file__).resolve().parents[2]
OA_ENV, AN_ENV = "TGRS_TEST_OA_KEY", "TGRS_TEST_AN_KEY"
OA_KEY, AN_KEY = "sk-test-oa-c0ffee5ca1ab1e01", "sk-test-an-deadbeefcafe0042"
N, SEED = 240, 11


def brain(prompt: str) -> dict[str, Any]:
    out = default_brain(prompt)
    ref = re.findall(r"<reference>(.*?)</reference>", prompt, re.S)
    if out["passed"] and ref and int(ref[-1].strip()) % 5 == 0:
        return {"score": 3, "passed": False, "rationale": "a multiple of five: suspicious"}
    return out


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv(OA_ENV, OA_KEY)
    monkeypatch.setenv(AN_ENV, AN_KEY)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "in.jsonl", N, seed=SEED)


def expected(path: Path) -> dict[str, Any]:
    good, accepted, rejected = set(), set(), set()
    for raw in path.read_text().splitlines():
        rec = json.loads(raw)
        final = rec["messages"][-1]["content"] or ""
        m = re.findall(r"Answer:\s*(-?\d+)", final)
        if m and int(m[-1]) == rec["reference"]:
            good.add(rec["id"])
            (rejected if rec["reference"] % 5 == 0 else accepted).add(rec["id"])
        else:
            rejected.add(rec["id"])
    return {"good": good, "accepted": accepted, "rejected": rejected, "n": len(accepted | rejected)}


def write_panel(tmp_path: Path, srv: StandIn, an_srv: StandIn | None = None, **judge: Any) -> Path:
    """The shipped judge files, included and pointed at the stand-in (``an_srv``: Anthropic's own)."""
    common = {"rpm": 12000, "max_concurrency": 32, "timeout_s": 5, **judge}
    gpt = {"include": str(ROOT / "teachers" / "openai-judge.toml"), "base_url": srv.url_openai,
           "api_key_env": OA_ENV, "tpm": 10_000_000, **common}
    # the shipped file names claude-3-5-haiku-latest, past its end of life (the SDK warns)
    claude = {"include": str(ROOT / "teachers" / "anthropic-judge.toml"), "model": "claude-haiku-4-5",
              "base_url": (an_srv or srv).url_anthropic, "api_key_env": AN_ENV,
              "input_tpm": 10_000_000, "output_tpm": 10_000_000, **common}
    lines = ['policy = "unanimous"', "", "[[teacher]]", 'name = "answer"', 'kind = "final_answer"',
             "cost_rank = 0"]
    for t in (gpt, claude):
        lines += ["", "[[teacher]]", *(f"{k} = {json.dumps(v)}" for k, v in t.items())]
    p = tmp_path / "panel.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def curate(data: Path, panel: Path, out: Path, *args: str, capsys) -> dict[str, Any]:
    rc = cli_main(["curate", str(data), "--panel", str(panel), "--out", str(out), "--quiet",
                   "--json", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert OA_KEY not in captured.out + captured.err and AN_KEY not in captured.out + captured.err
    return json.loads(captured.out)


def ids(out: Path, name: str) -> set[str]:
    p = out / f"{name}.jsonl"
    return {json.loads(line)["id"] for line in p.read_text().splitlines()} if p.exists() else set()


def verdicts(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]


def assert_no_keys(*dirs: Path) -> None:
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file():
                blob = p.read_bytes()
                assert OA_KEY.encode() not in blob and AN_KEY.encode() not in blob, p


def test_summary_cascade_cache_and_dry_run(data, tmp_path, capsys):
    exp = expected(data)
    n_good = len(exp["good"])
    n_claude = n_good - len(exp["good"] & exp["rejected"])  # gpt's rejections never reach claude
    assert 0 < n_claude < n_good < exp["n"]
    cache = tmp_path / "ledger.sqlite"
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)

        dry = curate(data, panel, tmp_path / "dry", "--dry-run", "--cache", str(cache), capsys=capsys)
        assert srv.stats["requests"] == 0 and not (tmp_path / "dry").exists()
        assert dry["candidates"] == exp["n"] and dry["decided_without_paid_calls"] == exp["n"] - n_good

        s1 = curate(data, panel, tmp_path / "run1", "--cache", str(cache), capsys=capsys)
        http_1 = srv.stats["requests"]
        out1 = tmp_path / "run1"
        assert ids(out1, "accepted") == exp["accepted"] and ids(out1, "rejected") == exp["rejected"]
        t = s1["teachers"]
        assert t["answer"]["calls"] == exp["n"] and t["answer"]["calls_saved"] == 0
        assert t["gpt_judge"]["calls"] == n_good and t["gpt_judge"]["calls_saved"] == exp["n"] - n_good
        assert t["claude_judge"]["calls"] == n_claude
        assert t["claude_judge"]["calls_saved"] == exp["n"] - n_claude
        assert s1["calls_saved"] == 2 * exp["n"] - n_good - n_claude
        assert http_1 == n_good + n_claude == t["gpt_judge"]["requests"] + t["claude_judge"]["requests"]
        assert s1["failed"] == 0 and s1["pending"] == 0 and s1["stopped"] is None
        vs = verdicts(out1)
        paid = sum(v["cost_usd"] for v in vs)
        assert paid > 0 and s1["cost_usd"] == pytest.approx(paid, abs=1e-6)
        assert t["answer"]["cost_usd"] == 0
        assert t["gpt_judge"]["cost_usd"] + t["claude_judge"]["cost_usd"] == pytest.approx(s1["cost_usd"], abs=2e-6)
        assert s1["cost_per_accepted_usd"] == pytest.approx(s1["cost_usd"] / len(exp["accepted"]), rel=1e-3)
        # the dry run's bound: exact for the OpenAI judge, an upper bound for the Anthropic judge
        assert dry["teachers"]["gpt_judge"]["calls"] == n_good
        assert dry["teachers"]["claude_judge"]["calls"] == n_good >= n_claude
        assert dry["paid_calls_at_most"] >= http_1 and dry["cost_usd_at_most"] >= s1["cost_usd"]

        s2 = curate(data, panel, tmp_path / "run2", "--cache", str(cache), capsys=capsys)
        assert srv.stats["requests"] == http_1  # not one HTTP request
        out2 = tmp_path / "run2"
        assert ids(out2, "accepted") == exp["accepted"] and ids(out2, "rejected") == exp["rejected"]
        t2 = s2["teachers"]
        assert t2["gpt_judge"]["cache_hits"] == n_good and t2["claude_judge"]["cache_hits"] == n_claude
        assert t2["gpt_judge"]["requests"] == t2["claude_judge"]["requests"] == 0
        assert s2["cost_usd"] == 0 and s2["cost_per_accepted_usd"] == 0

        dry2 = curate(data, panel, tmp_path / "dry2", "--dry-run", "--cache", str(cache), capsys=capsys)
        assert dry2["paid_calls_at_most"] == 0 and dry2["cost_usd_at_most"] == 0
        assert dry2["teachers"]["gpt_judge"]["cache_hits"] == n_good
        assert dry2["teachers"]["claude_judge"]["cache_hits"] == n_claude
        assert srv.stats["requests"] == http_1
    assert_no_keys(out1, out2, tmp_path)


def test_budget_stops_cleanly_and_resumes_without_paying_twice(data, tmp_path, capsys):
    exp = expected(data)
    with StandIn(brain=brain) as srv:
        panel = write_panel(tmp_path, srv)
        full = curate(data, panel, tmp_path / "full", "--no-cache", capsys=capsys)
        total = full["cost_usd"]
        http_full = srv.stats["requests"]
        budget = round(total * 0.3, 8)

        out = tmp_path / "budgeted"
        s1 = curate(data, panel, out, "--no-cache", "--budget-usd", str(budget), capsys=capsys)
        assert s1["stopped"] and "budget" in s1["stopped"] and s1["pending"] > 0
        assert s1["accepted"] + s1["rejected"] < exp["n"]
        spent = sum(v["cost_usd"] for v in verdicts(out))
        assert 0 < spent <= budget and s1["cost_usd"] <= budget
        http_1 = srv.stats["requests"] - http_full

        s2 = curate(data, panel, out, "--no-cache", "--budget-usd", str(total * 10), capsys=capsys)
        assert s2["stopped"] is None and s2["pending"] == 0 and s2["failed"] == 0
        assert ids(out, "accepted") == ids(tmp_path / "full", "accepted") == exp["accepted"]
        assert ids(out, "rejected") == ids(tmp_path / "full", "rejected") == exp["rejected"]
        vs = verdicts(out)
        pairs = Counter((v["id"], v["teacher"]) for v in vs if v["error"] is None)
        assert max(pairs.values()) == 1  # no (candidate, teacher) judged twice
        assert srv.stats["requests"] - http_full == http_full  # both sessions together: one full run
        assert http_1 < http_full
        assert sum(v["cost_usd"] for v in vs) == pytest.approx(total, abs=1e-6)
        assert s2["cost_usd"] == pytest.approx(total, abs=1e-6)


def test_fault_storm_every_candidate_decided(data, tmp_path, capsys):
    exp = expected(data)
    # each provider: 10% 5xx and 3,000 requests/min enforced while the panel claims 12,000; the
    # client learns the real limit from headers (OpenAI) or, with no headers sent, from 429s alone
    # (Anthropic), and retries until everything is decided
    plan = dict(p_5xx=0.1, rpm=3000, burst_s=0.5)
    with StandIn(FaultPlan(**plan, seed=5), brain=brain) as oa, \
            StandIn(FaultPlan(**plan, seed=6, ratelimit_headers=False), brain=brain) as an:
        for srv in (oa, an):  # a limiter that keeps within the rate may see none: make sure 429s come
            srv.script.extend(["429", "ok", "429"])
        panel = write_panel(tmp_path, oa, an, max_attempts=10)
        s = curate(data, panel, tmp_path / "storm", "--no-cache", capsys=capsys)
        stats = oa.stats + an.stats
    out = tmp_path / "storm"
    assert s["failed"] == 0 and s["pending"] == 0 and s["stopped"] is None
    assert ids(out, "accepted") == exp["accepted"] and ids(out, "rejected") == exp["rejected"]
    assert not any(v["error"] for v in verdicts(out))
    assert stats["500"] > 0 and stats["429"] > 0 and s["rate_limited"] == stats["429"]
    t = s["teachers"]
    assert t["gpt_judge"]["requests"] + t["claude_judge"]["requests"] == stats["requests"]
    assert t["gpt_judge"]["requests"] > t["gpt_judge"]["calls"]  # retries are counted
    assert s["wall_s"] < 20
