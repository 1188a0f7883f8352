"""The cluster's paid-call state through real Ray actors: the lease bank and the budget book, and a
paid panel judged in shards against the loopback stand-in, every worker on one bank."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from tgrs_agents.cluster.actors import RayBank, RayBook, bank_handle, book_handle
from tgrs_agents.cluster.engine import curate_on_ray
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.paid.limits import EndpointLimits
from tgrs_agents.tasks.arithmetic_data import write_synthetic

KEY_ENV = "TGRS_CLUSTER_TEST_KEY"


def test_the_bank_actor_grants_leases_and_hears_429s(ray_local):
    ray = ray_local
    h = bank_handle("t-bank", "http://x#1", EndpointLimits(rpm=6000))
    assert bank_handle("t-bank", "http://x#1", EndpointLimits(rpm=6000))._actor_id == h._actor_id  # by name
    bank = RayBank(h)

    async def main():
        a = await bank.grant(1 << 30, 0.0)
        b = await bank.grant(1 << 30, 0.0)
        return a, b

    a, b = asyncio.run(main())
    assert a.requests == b.requests == 20  # 0.2 s of 100/s
    assert b.wait_s > a.wait_s  # served in turn: the second waits for the first's quota
    bank.give_back(a.epoch, 5, 0.0)
    assert ray.get(h.rate_limited.remote(2.0)) == 1
    bank.give_back(b.epoch, 5, 0.0)  # voided by the 429
    rep = ray.get(h.report.remote())
    assert rep["grants"] == 2 and rep["returned"] == 5 and rep["voided"] == 5 and rep["rate_limited"] == 1
    c = asyncio.run(bank.grant(1, 0.0))
    assert c.epoch == 1 and c.wait_s >= 2.0 - 0.05  # everyone's next lease waits the pause out


def test_the_book_actor_is_one_budget(ray_local):
    book = RayBook(book_handle("t-book", 1.0))
    assert book.reserve(0.6) == pytest.approx(0.6)
    assert book.reserve(0.6) == pytest.approx(0.4)  # only what is left
    assert book.reserve(0.1) == 0.0
    book.settle(0.6, 0.1)  # spent 0.1 of an allowance of 0.6: 0.5 back
    assert book.reserve(1.0) == pytest.approx(0.5)


def test_paid_shards_share_one_limit(ray_local, standin, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-cluster-not-a-real-key")
    panel = tmp_path / "panel.toml"
    panel.write_text("\n".join(['policy = "unanimous"', "[[teacher]]", 'name = "judge"', 'kind = "openai"',
                                'model = "gpt-4o-mini"', f'base_url = "{standin}/v1"', f'api_key_env = "{KEY_ENV}"',
                                "max_tokens = 64", "rpm = 2400"]) + "\n")
    data = write_synthetic(tmp_path / "in.jsonl", 160, seed=2, per_task=1)
    before = json.load(urllib.request.urlopen(f"{standin}/stats", timeout=10))
    s = curate_on_ray(data, load_panel(panel), tmp_path / "run", options=CurateOptions(cache=False, budget_usd=1.0),
                      workers=2)
    after = json.load(urllib.request.urlopen(f"{standin}/stats", timeout=10))
    assert s["accepted"] + s["rejected"] == 160 and s["failed"] == 0
    calls = after.get("requests", 0) - before.get("requests", 0)
    assert calls >= 160
    assert after.get("429", 0) - before.get("429", 0) <= 0.01 * calls + 1
    state = s["engine"]["paid_state"]
    banks = [k for k in state if k.startswith("bank:")]
    assert len(banks) == 1  # both shards' judges on one endpoint: one bank
    rep = state[banks[0]]
    assert rep["requests"] >= 160 and 2 <= rep["grants"] < 160  # leases, not a grant per call
    assert s["cost_usd"] > 0 and state["book"]["spent_usd"] == pytest.approx(s["cost_usd"], rel=1e-3)
    assert state["book"]["out_usd"] == pytest.approx(0.0, abs=1e-9)  # every allowance settled
    run_id = json.loads((tmp_path / "run" / "cluster.json").read_text())["run_id"]
    left = [a["name"] for a in ray_local.util.list_named_actors(all_namespaces=True) if run_id in a["name"]]
    assert left == []  # the run's actors are gone with it


def test_a_worker_killed_mid_run_resumes_its_shard(ray_local, standin, tmp_path, monkeypatch):
    import os
    import signal
    import threading
    import time

    monkeypatch.setenv(KEY_ENV, "sk-test-cluster-not-a-real-key")
    panel = tmp_path / "panel.toml"
    panel.write_text("\n".join(['policy = "unanimous"', "[[teacher]]", 'name = "judge"', 'kind = "openai"',
                                'model = "gpt-4o-mini"', f'base_url = "{standin}/v1"', f'api_key_env = "{KEY_ENV}"',
                                "max_tokens = 64", "rpm = 2400"]) + "\n")
    import random

    n, in_flight = 300, 16
    at = random.randint(10, 150)  # a random moment: after this many of shard 0's verdicts
    data = write_synthetic(tmp_path / "in.jsonl", n, seed=4, per_task=1)
    run = tmp_path / "run"
    killed: list[int] = []

    def killer() -> None:  # SIGKILL shard 0's worker once it has journaled some verdicts
        verdicts, lock = run / "shards" / "000" / "run" / "verdicts.jsonl", run / "shards" / "000" / "run" / ".lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if len(verdicts.read_bytes().splitlines()) >= at:
                    pid = int(lock.read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.05)

    before = json.load(urllib.request.urlopen(f"{standin}/stats", timeout=10))
    t = threading.Thread(target=killer)
    t.start()
    s = curate_on_ray(data, load_panel(panel), run, options=CurateOptions(cache=False, max_in_flight=in_flight),
                      workers=2)
    t.join()
    after = json.load(urllib.request.urlopen(f"{standin}/stats", timeout=10))
    assert killed, f"the worker was never killed (at {at}): the test proves nothing"
    ids = [json.loads(line)["id"] for name in ("accepted", "rejected")
           for line in (run / f"{name}.jsonl").read_text().splitlines()]
    where = {str(p.relative_to(run)): len(p.read_text().splitlines()) for p in run.rglob("*.jsonl")}
    assert len(ids) == len(set(ids)) == n, (killed, where, s)  # nothing lost, none written twice
    assert s["accepted"] + s["rejected"] == n
    calls = after.get("requests", 0) - before.get("requests", 0)
    assert n <= calls <= n + in_flight, at  # repaid: at most the calls in flight at the kill
    one = tmp_path / "single"  # the outputs equal a single process's on the same input
    asyncio.run(CurateRun(data, load_panel(panel), one, options=CurateOptions(cache=False)).run())
    for name in ("accepted", "rejected"):
        assert sorted(map(json.loads, (run / f"{name}.jsonl").read_text().splitlines()), key=str) == sorted(
            map(json.loads, (one / f"{name}.jsonl").read_text().splitlines()), key=str), (name, at)
    key = b"sk-test-cluster-not-a-real-key"
    assert not any(key in p.read_bytes() for p in run.rglob("*") if p.is_file())


def test_the_driver_starts_one_bank_per_endpoint_at_its_lowest_limit_and_only_the_actors_the_run_uses(
        ray_local, tmp_path, monkeypatch):
    from tgrs_agents.cluster.actors import release_run
    from tgrs_agents.cluster.engine import ShardSpec, _endpoints, _start_state

    monkeypatch.setenv(KEY_ENV, "sk-test-cluster-not-a-real-key")
    panel = tmp_path / "panel.toml"
    judge = ['kind = "openai"', 'model = "gpt-4o-mini"', 'base_url = "http://127.0.0.1:9/v1"',
             f'api_key_env = "{KEY_ENV}"']
    panel.write_text("\n".join(['policy = "unanimous"',
                                "[[teacher]]", 'name = "a"', *judge, "rpm = 6000",
                                "[[teacher]]", 'name = "b"', *judge, "rpm = 3000", "seed = 1",
                                "[[teacher]]", 'name = "tool"', 'kind = "python"',
                                'function = "tgrs_agents.teachers.checks:answer_matches_tool"']) + "\n")

    def started(run: str, options: CurateOptions) -> tuple[dict, int]:
        spec = ShardSpec(0, "-", 0, 0, str(tmp_path), load_panel(panel), options, run, options.budget_usd)
        _start_state(spec, _endpoints(spec))
        names = [a["name"] for a in ray_local.util.list_named_actors(all_namespaces=True) if f":{run}:" in a["name"]
                 or a["name"].endswith(f":{run}")]
        bank = next(n for n in names if n.startswith("tgrs-bank:"))
        lease = ray_local.get(ray_local.get_actor(bank, namespace="tgrs").grant.remote(1 << 30, 0.0))
        release_run(run)
        return {n.split(":")[0] for n in names}, lease.requests

    kinds, lease = started("t-lean", CurateOptions(cache=False))
    assert kinds == {"tgrs-bank"}  # two judges on one endpoint: one bank; no budget, no ledger: nothing else
    assert lease == 10  # 0.2 s of 3000/min: the lower of the two judges' rpm, as one process keeps it
    kinds, _ = started("t-full", CurateOptions(cache=True, cache_path=str(tmp_path / "ledger.db"), budget_usd=1.0))
    assert kinds == {"tgrs-bank", "tgrs-book", "tgrs-claims"}


def test_claims_split_over_several_actors_still_let_one_worker_pay(ray_local):
    from tgrs_agents.cluster.actors import RayClaims, claim_parts, claims_handle, release_run

    assert claim_parts(3000, 4) == 1 and claim_parts(90_000, 4) == 3 and claim_parts(None, 100) == 4
    handles = [claims_handle("t-split", k) for k in range(2)]
    w1, w2 = RayClaims(handles), RayClaims([claims_handle("t-split", k) for k in range(2)])  # two workers

    async def main():
        keys = [f"content-{i}" for i in range(40)]
        first = [await w1.claim(k, "w1") for k in keys]
        second = [await w2.claim(k, "w2") for k in keys]  # the same contents: each already claimed
        return first, second

    first, second = asyncio.run(main())
    assert all(first) and not any(second)  # a key goes to one actor whichever worker asks
    state = release_run("t-split")
    assert sorted(state) == ["claims", "claims:1"]
    granted = [state["claims"]["granted"], state["claims:1"]["granted"]]
    assert sum(granted) == 40 and min(granted) >= 8  # and the keys spread over both
