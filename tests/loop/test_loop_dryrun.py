"""``tgrs run CONFIG --dry-run``: the paid calls per round and an upper bound on their cost, before, during
and after a run; it calls nothing and writes nothing (tgrs_agents.loop.dryrun)."""

from __future__ import annotations

import json

import pytest
from budget_kit import KEY, KEY_ENV, config, judge_requests, loop, rollouts, write_config, write_panel

from tgrs_agents.cli import main
from tgrs_agents.curation.store import iter_jsonl
from tgrs_agents.loop.dryrun import dry_run_loop, plan
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.testing.standin import StandIn


@pytest.fixture
def srv(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with StandIn() as s:
        yield s


def test_the_plan_bounds_each_round_and_a_finished_run_plans_nothing(tmp_path, srv):
    panel = write_panel(tmp_path, srv.url_openai, max_tokens=64)
    cfg = config(tmp_path, panel)
    out, ledger = tmp_path / "run", tmp_path / "ledger.sqlite"
    before = dry_run_loop(ExpertIteration(cfg, out, log=lambda s: None, cache_path=str(ledger)))
    assert not out.exists() and not ledger.exists() and judge_requests(srv) == 0  # nothing called or written
    r0, r1, r2 = before["rounds"]
    assert r0["stages"] == {} and r0["cost_usd_at_most"] == 0  # the tiny student's eval never pays
    for r in (r1, r2):  # 8 tasks x 2 samples, every one judged by the one priced judge
        assert r["stages"]["judge"]["calls"] == 16 and r["stages"]["judge"]["by"]["gpt"]["calls"] == 16
    assert before["calls_at_most"] == 32 and before["fits"] is None

    done = loop(cfg, out, ledger).run()
    for r, bound in zip(done["rounds"][1:], (r1, r2), strict=True):
        assert 0 < r["cost_usd"] <= bound["cost_usd_at_most"]  # the estimate bounds what was paid
    after = plan(loop(cfg, out, ledger))
    assert after["cost_usd_at_most"] == 0 and after["calls_at_most"] == 0
    assert all(s["done"] for r in after["rounds"] for s in r["stages"].values())
    assert after["spent_usd"] == pytest.approx(done["cost_usd"], abs=2e-6)


def test_a_stopped_round_plans_only_what_is_left(tmp_path, srv):
    panel = write_panel(tmp_path, srv.url_openai)
    cfg = config(tmp_path, panel, rounds=1)
    out, ledger = tmp_path / "run", tmp_path / "ledger.sqlite"
    first = dry_run_loop(loop(cfg, out, ledger))["rounds"][1]["stages"]["judge"]
    stopped = loop(cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"usd": first["cost_usd"] / 3})}),
                   out, ledger).run()
    assert "round 1's judge" in stopped["stopped"]
    curate = out / "round-1" / "curate"
    decided = sum(1 for name in ("accepted", "rejected") for _ in iter_jsonl(curate / f"{name}.jsonl"))
    assert 0 < decided < 16
    left = plan(loop(cfg, out, ledger))["rounds"][1]["stages"]["judge"]
    assert not left["done"] and 0 < left["calls"] <= 16 - decided and left["cost_usd"] < first["cost_usd"]


def test_the_command_line_plans_stops_and_resumes(tmp_path, srv, monkeypatch, capsys):
    panel = write_panel(tmp_path, srv.url_openai)
    toml = write_config(tmp_path, panel, extra="[budget]\nusd = 100.0\n")
    out, ledger = tmp_path / "run", tmp_path / "ledger.sqlite"
    monkeypatch.setattr(ExpertIteration, "_rollouts", lambda self, *a: rollouts(*a))
    loop(config(tmp_path, panel), out, ledger)  # round 0: the untrained tiny student

    assert main(["run", str(toml), "--out", str(out), "--dry-run", "--json", "--budget-usd", "0.001"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["budget_usd"] == 0.001 and p["fits"] is False and p["rounds"][1]["stages"]["judge"]["calls"] == 16
    assert main(["run", str(toml), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "round 1: judge at most 16 calls (gpt 16)" in text and "budget $100.0000" in text

    assert main(["run", str(toml), "--out", str(out), "--cache", str(ledger), "--budget-usd", "0.001"]) == 0
    text = capsys.readouterr().out
    assert "[tgrs] budget $0.0010 reached" in text and "stopped early by the budget" in text
    calls = judge_requests(srv)
    assert calls > 0  # the stopped run judged some candidates
    assert main(["run", str(toml), "--out", str(out), "--cache", str(ledger)]) == 0  # the file's $100
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] is None and len(s["rounds"]) == 3 and s["budget_usd"] == 100.0
    assert f"paid ${s['cost_usd']:.4f} in all" in text and "per accepted sample" in text
    resumed = judge_requests(srv) - calls
    assert 0 < resumed < 32  # what the stopped run judged was not asked again


def test_the_dry_run_refuses_a_directory_of_another_config_and_writes_nothing(tmp_path):
    from tgrs_agents.errors import RunStoreError
    from tgrs_agents.loop.config import LoopConfig

    base = dict(rounds=1, tasks={"n_train": 8, "n_eval": 4}, base_dir=str(tmp_path))
    out = tmp_path / "run"
    ExpertIteration(LoopConfig(**base), out, log=lambda s: None).claim()
    meta = (out / "run.json").read_text()
    other = ExpertIteration(LoopConfig(**base, generate={"n": 3}), out, log=lambda s: None)
    with pytest.raises(RunStoreError, match=r"generate\.n: 8 -> 3"):
        dry_run_loop(other)
    assert (out / "run.json").read_text() == meta and sorted(p.name for p in out.iterdir()) == ["run.json"]
    same = dry_run_loop(ExpertIteration(LoopConfig(**base, budget={"usd": 3.0}), out, log=lambda s: None))
    assert same["budget_usd"] == 3.0 and same["calls_at_most"] == 0  # verifiers only: nothing to pay for
