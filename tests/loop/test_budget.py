"""``[budget] usd`` / ``--budget-usd`` over a whole ``tgrs run``: a stop at a stage boundary, a resume with a
larger budget that pays nothing twice, cost per round and per accepted sample (tgrs_agents.loop.budget)."""

from __future__ import annotations

import json

import pytest
from budget_kit import KEY, KEY_ENV, config, judge_requests, loop, write_panel

from tgrs_agents.testing.standin import StandIn


def approx(x: float) -> object:
    return pytest.approx(x, abs=2e-6)  # summary figures are rounded to 6 decimals


@pytest.fixture
def srv(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with StandIn() as s:
        yield s


def test_budget_stop_and_resume_across_rounds(tmp_path, srv):
    panel = write_panel(tmp_path, srv.url_openai)
    full = loop(config(tmp_path, panel), tmp_path / "full", tmp_path / "ledger-full.sqlite").run()
    c1, c2 = full["rounds"][1]["cost_usd"], full["rounds"][2]["cost_usd"]
    assert c1 > 0 and c2 > 0 and full["cost_usd"] == approx(c1 + c2) and full["stopped"] is None
    assert full["rounds"][1]["stage_cost_usd"] == {"judge": c1}
    assert full["rounds"][1]["cost_per_accepted_usd"] == approx(c1 / full["rounds"][1]["accepted"])
    calls = judge_requests(srv)
    assert 16 <= calls <= 2 * 16  # 8 tasks x 2 samples, one judge, two rounds (a same trajectory: once)

    budget = c1 + c2 / 2  # round 1 and about half of round 2
    out, ledger, logs = tmp_path / "run", tmp_path / "ledger.sqlite", []
    first = loop(config(tmp_path, panel, budget={"usd": budget}), out, ledger, log=logs.append).run()
    assert first["stopped"] and "stopped in round 2's judge stage" in first["stopped"]
    assert [line for line in logs if line.startswith("[tgrs] budget $")] == [f"[tgrs] {first['stopped']}"]
    assert [r["round"] for r in first["rounds"]] == [0, 1] and first["budget_usd"] == budget
    assert 0 < first["cost_usd"] - c1 <= budget - c1 + 1e-12  # round 2 began, within the cap
    assert (out / "round-1" / "eval.done.json").exists() and not (out / "round-2" / "judge.done.json").exists()
    assert json.loads((out / "summary.json").read_text())["stopped"] == first["stopped"]

    # the same command with a larger budget (the config file's; it is out of the fingerprint): it resumes
    meta = json.loads((out / "run.json").read_text())["fingerprint"]
    second = loop(config(tmp_path, panel, budget={"usd": 1.0}), out, ledger).run()
    assert json.loads((out / "run.json").read_text())["fingerprint"] == meta
    assert second["stopped"] is None and [r["round"] for r in second["rounds"]] == [0, 1, 2]
    assert judge_requests(srv) - calls == calls  # each candidate judged once over both invocations
    assert second["cost_usd"] == approx(full["cost_usd"])  # and paid for once
    assert second["cost_usd_invocation"] == approx(full["cost_usd"] - first["cost_usd"])
    assert second["rounds"][2]["cost_usd"] == approx(c2)

    # a re-run of the finished run pays nothing; so does the same config into a new directory (the ledger)
    again = loop(config(tmp_path, panel, budget={"usd": 1.0}), out, ledger).run()
    fresh = loop(config(tmp_path, panel), tmp_path / "fresh", ledger).run()
    assert judge_requests(srv) - calls == calls
    assert again["cost_usd_invocation"] == 0 and again["cost_usd"] == approx(second["cost_usd"])
    assert fresh["cost_usd"] == 0 and fresh["rounds"][2]["accepted"] == full["rounds"][2]["accepted"]


def test_a_stage_that_cannot_resume_does_not_start_past_the_budget(tmp_path, srv):
    """An API eval panel judges every eval sample in one go: with too little budget left for its upper
    bound the run stops before the eval stage, having called nothing."""
    panel = write_panel(tmp_path, srv.url_openai)
    cfg = config(tmp_path, panel, eval={"panel": str(panel)}, budget={"usd": 1e-5})
    logs: list[str] = []
    summary = loop(cfg, tmp_path / "run", tmp_path / "ledger.sqlite", log=logs.append).run()
    assert "stopped before round 0's eval stage" in summary["stopped"] and "upper bound $" in summary["stopped"]
    assert judge_requests(srv) == 0 and summary["rounds"] == [] and summary["cost_usd"] == 0
    done = loop(cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"usd": 1.0})}), tmp_path / "run",
                tmp_path / "ledger.sqlite").run()
    assert done["stopped"] is None and done["rounds"][0]["stage_cost_usd"]["eval"] > 0
    assert done["cost_usd"] == approx(sum(r["cost_usd"] for r in done["rounds"]))


def test_the_budget_is_operational_and_validated(tmp_path):
    from tgrs_agents.errors import ConfigError
    from tgrs_agents.loop.config import load_run_config
    from tgrs_agents.loop.fingerprint import identity

    path = tmp_path / "run.toml"
    path.write_text("rounds = 1\n[budget]\nusd = 2.5\n")
    cfg = load_run_config(path)
    assert cfg.budget.usd == 2.5
    assert identity(cfg, "filtered") == identity(cfg.model_copy(update={"budget": cfg.budget.model_copy(
        update={"usd": None})}), "filtered")
    path.write_text("rounds = 1\n[budget]\nusd = -1\n")
    with pytest.raises(ConfigError, match=r"run\.toml.*budget\.usd"):
        load_run_config(path)


def test_the_refiner_pays_from_the_same_budget_and_waits_for_room(tmp_path, srv):
    """The refine stage cannot resume inside itself: with its bound over what is left it does not start;
    with a larger budget it runs, and what it paid is journaled under its round (spend.jsonl)."""
    panel = write_panel(tmp_path, srv.url_openai)
    refine = {"model": "gpt-refine-test", "base_url": srv.url_openai, "api_key_env": KEY_ENV,
              "price_input_per_mtok": 2.0, "price_output_per_mtok": 8.0}
    cfg = config(tmp_path, panel, rounds=1, refine=refine, budget={"usd": 0.02})
    out, ledger = tmp_path / "run", tmp_path / "ledger.sqlite"
    stopped = loop(cfg, out, ledger).run()
    assert "stopped before round 1's refine stage" in stopped["stopped"]
    assert (out / "round-1" / "judge.done.json").exists() and not (out / "round-1" / "refine").exists()
    judged = judge_requests(srv)
    assert not any("refine" in json.dumps(r["body"]) and r["model"] == "gpt-refine-test" for r in srv.requests)

    done = loop(cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"usd": 1.0})}), out, ledger).run()
    r1 = done["rounds"][1]
    refined = [r for r in srv.requests if r["model"] == "gpt-refine-test"]
    assert len(refined) == r1["accepted"] == judge_requests(srv) - judged  # one rewrite per accepted candidate
    assert r1["stage_cost_usd"]["refine"] > 0 and r1["cost_usd"] == approx(sum(r1["stage_cost_usd"].values()))
    spent = [json.loads(x) for x in (out / "spend.jsonl").read_text().splitlines()]
    assert {(s["round"], s["stage"]) for s in spent} == {(1, "refine")} and len(spent) == len(refined)
    assert done["cost_usd"] <= 1.0 and done["cost_usd"] == approx(stopped["cost_usd"] + done["cost_usd_invocation"])
