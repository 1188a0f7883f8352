"""``mode = "batch"`` inside the cheapest-first cascade, through the real SDKs against the stand-in.

A ``final_answer`` verifier decides every wrong answer at once; only the candidates it leaves undecided reach
the batch judge, whose brain also rejects correct answers to multiples of 5. Every expectation is recomputed
from the input (the verifier's and the brain's rules), and compared with the same panel run online.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from batch_cascade_kit import (
    AN_ENV,
    AN_KEY,
    OA_ENV,
    OA_KEY,
    answered,
    brain,
    decisions,
    verdicts,
    write_panel,
)

from tgrs_agents.cli import main as cli_main
from tgrs_agents.curation.batching import batch_status
from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.paid.cost import Budget
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.retry import RetryPolicy
from tgrs_agents.paid.services import Services
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.testing.standin import FaultPlan, StandIn

pytest.importorskip("openai")
pytest.importorskip("anthropic")
N = 60
FAST = {"window_s": 0.05, "poll_s": 0.02, "max_items": 16}


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv(OA_ENV, OA_KEY)
    monkeypatch.setenv(AN_ENV, AN_KEY)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "in.jsonl", N, seed=7)


def expected(path: Path) -> tuple[dict[str, bool], set[str]]:
    """Each candidate's decision, and the ids the verifier leaves undecided (a correct final answer)."""
    import re

    out, open_ = {}, set()
    for raw in path.read_text().splitlines():
        rec = json.loads(raw)
        m = re.findall(r"Answer:\s*(-?\d+)", rec["messages"][-1]["content"] or "")
        good = bool(m) and int(m[-1]) == rec["reference"]
        if good:
            open_.add(rec["id"])
        out[rec["id"]] = good and rec["reference"] % 5 != 0
    return out, open_


def run(data: Path, panel: Path, out: Path, *, budget: float | None = None, cache: Path | None = None,
        max_in_flight: int = 8) -> tuple[dict, CurateRun]:
    services = Services(budget=Budget(budget), ledger=Ledger(cache) if cache else None,
                        retry=RetryPolicy(initial_s=0.0, jitter_s=0.0))
    cfg = load_panel(panel)
    r = CurateRun(data, cfg, out, options=CurateOptions(max_in_flight=max_in_flight, budget_usd=budget,
                                                         cache=cache is not None),
                  panel=Panel.from_config(cfg, services), services=services)
    return asyncio.run(r.run()), r


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_judge_sees_only_undecided_and_decides_as_online(data, tmp_path, provider):
    want, undecided = expected(data)
    assert 0 < len(undecided) < N and any(not v for k, v in want.items() if k in undecided)
    with StandIn(FaultPlan(batch_delay_s=0.1), brain=brain) as srv:
        online, _ = run(data, write_panel(tmp_path / "on.toml", srv, provider), tmp_path / "online")
        http_online = srv.stats["requests"]
        s, r = run(data, write_panel(tmp_path / "b.toml", srv, provider, "batch", **FAST), tmp_path / "batch")
        assert srv.stats["requests"] == http_online  # no online judge call in batch mode
        asked = [b.items for b in srv.batches.all.values()]
    assert decisions(tmp_path / "batch") == decisions(tmp_path / "online") == want
    # the batch judge heard exactly the undecided candidates, each once, in batches of at most max_items
    judged = {v["id"] for v in verdicts(tmp_path / "batch") if v["teacher"] == "judge"}
    assert judged == undecided and sum(len(a) for a in asked) == len(undecided)
    assert max(len(a) for a in asked) <= FAST["max_items"] and len(asked) >= len(undecided) // FAST["max_items"]
    t, t_on = s["teachers"]["judge"], online["teachers"]["judge"]
    assert t["calls"] == t_on["calls"] == len(undecided) and t["calls_saved"] == N - len(undecided)
    # half price: the same tokens billed at the batch share
    assert t["cost_usd"] == pytest.approx(t_on["cost_usd"] / 2, rel=0.02) and t["cost_usd"] > 0
    assert s["cost_usd"] == pytest.approx(sum(v["cost_usd"] for v in verdicts(tmp_path / "batch")), abs=1e-6)
    assert s["pending"] == 0 and s["failed"] == 0 and s["batches"]["judge"]["requests"] == len(undecided)
    # the budget was reserved for each request and settled from its usage: nothing is left held
    assert r.services.budget.reserved_usd == pytest.approx(0, abs=1e-12)
    assert r.services.budget.spent_usd == pytest.approx(s["cost_usd"], abs=1e-6)


def test_ledger_shares_verdicts_between_batch_and_online(data, tmp_path):
    """Batch verdicts go to the ledger under the online judge's keys: an online re-run pays nothing."""
    cache = tmp_path / "ledger.sqlite"
    _, undecided = expected(data)
    with StandIn(FaultPlan(batch_delay_s=0.05), brain=brain) as srv:
        run(data, write_panel(tmp_path / "b.toml", srv, "openai", "batch", **FAST), tmp_path / "b", cache=cache)
        assert srv.stats["batch_items"] == len(undecided)
        s2, _ = run(data, write_panel(tmp_path / "on.toml", srv, "openai"), tmp_path / "on", cache=cache)
        s3, _ = run(data, write_panel(tmp_path / "b.toml", srv, "openai", "batch", **FAST), tmp_path / "b2",
                    cache=cache)
        assert srv.stats["requests"] == 0 and srv.stats["batch_items"] == len(undecided)
    assert s2["cost_usd"] == s3["cost_usd"] == 0
    assert s2["teachers"]["judge"]["cache_hits"] == s3["teachers"]["judge"]["cache_hits"] == len(undecided)
    assert decisions(tmp_path / "on") == decisions(tmp_path / "b") == decisions(tmp_path / "b2")


def test_budget_reserves_worst_case_then_stops_and_resumes(data, tmp_path):
    """A budget below the worst case of every undecided request stops the run before it submits them all;
    a resume with more budget finishes, each candidate paid once."""
    _, undecided = expected(data)
    with StandIn(FaultPlan(batch_delay_s=0.05), brain=brain) as srv:
        panel = write_panel(tmp_path / "b.toml", srv, "openai", "batch", **FAST)
        full, _ = run(data, panel, tmp_path / "full")
        before = len(srv.batches.all)
        s1, r1 = run(data, panel, tmp_path / "out", budget=full["cost_usd"] * 1.2, max_in_flight=4)
        assert s1["stopped"] and "budget" in s1["stopped"] and s1["pending"] > 0
        assert r1.services.budget.spent_usd <= full["cost_usd"] * 1.2
        s2, _ = run(data, panel, tmp_path / "out", budget=full["cost_usd"] * 10)
        assert answered(srv, since=before) == len(undecided)  # none paid twice
    assert s2["pending"] == 0 and decisions(tmp_path / "out") == decisions(tmp_path / "full")
    paid = [v for v in verdicts(tmp_path / "out") if v["teacher"] == "judge" and v["error"] is None]
    assert len(paid) == len({v["id"] for v in paid}) == len(undecided)
    assert s2["cost_usd"] == pytest.approx(full["cost_usd"], rel=1e-6)


def test_status_lists_batches_in_flight(data, tmp_path, capsys):
    with StandIn(FaultPlan(batch_delay_s=3600), brain=brain) as srv:
        panel = write_panel(tmp_path / "b.toml", srv, "openai", "batch", **FAST)
        out = tmp_path / "out"

        async def partial():
            services = Services(retry=RetryPolicy(initial_s=0.0, jitter_s=0.0))
            cfg = load_panel(panel)
            r = CurateRun(data, cfg, out, options=CurateOptions(max_in_flight=8, cache=False),
                          panel=Panel.from_config(cfg, services), services=services)
            task = asyncio.create_task(r.run())
            def submitted() -> int:  # journaled with the provider's id (the stand-in may hear first)
                rows = batch_status(out).get("judge", {}).get("in_flight", [])
                return sum(r["items"] for r in rows if r["batch_id"])

            while submitted() < len(expected(data)[1]):
                await asyncio.sleep(0.02)
            task.cancel()  # the batches stay open at the provider
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(partial())
        assert cli_main(["status", str(out), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        rows = doc["judge"]["in_flight"]
        assert sum(r["items"] for r in rows) == len(expected(data)[1]) == doc["judge"]["items_in_flight"]
        assert all(r["batch_id"] and r["age_s"] >= 0 and r["state"] == "submitted" for r in rows)
        assert cli_main(["status", str(out), "--poll", "--json"]) == 0
        polled = json.loads(capsys.readouterr().out)["judge"]["in_flight"]
        assert {r["state"] for r in polled} <= {"validating", "in_progress"}  # the provider's own words
        assert all(set(r["counts"]) == {"total", "succeeded", "errored"} for r in polled)
        assert cli_main(["status", str(out)]) == 0
        text = capsys.readouterr().out
        assert "judge" in text and rows[0]["batch_id"] in text and "in flight" in text


def test_dry_run_prices_online_and_batch_side_by_side(data, tmp_path, capsys):
    _, undecided = expected(data)
    with StandIn(brain=brain) as srv:
        for mode in ("pointwise", "batch"):
            panel = write_panel(tmp_path / f"{mode}.toml", srv, "openai", mode)
            args = ["curate", str(data), "--panel", str(panel), "--out", str(tmp_path / mode), "--dry-run",
                    "--no-cache"]
            assert cli_main([*args, "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            t = doc["teachers"]["judge"]
            assert t["calls"] == len(undecided) and t["mode"] == ("batch" if mode == "batch" else "online")
            assert t["cost_usd_batch"] == pytest.approx(t["cost_usd_online"] / 2) and t["cost_usd_online"] > 0
            assert t["cost_usd"] == pytest.approx(t["cost_usd_batch" if mode == "batch" else "cost_usd_online"])
            assert doc["cost_usd_batch_at_most"] == pytest.approx(doc["cost_usd_online_at_most"] / 2, abs=1e-6)
            assert cli_main(args) == 0
            text = capsys.readouterr().out
            assert f"online ${t['cost_usd_online']:.4f} | batch ${t['cost_usd_batch']:.4f}" in text
        assert srv.stats["requests"] == 0 and srv.stats["batch_requests"] == 0
