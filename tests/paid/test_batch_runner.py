"""Durability of ``paid/batch_runner.py``: journal before submitting, adopt instead of resubmitting after a kill,
resubmit only failed or expired items, report provider cancellations. A kill is a BaseException raised at the
chosen point; the resume is a fresh runner on the same run directory."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from batch_kit import Killed, client, items, passed, standin  # noqa: F401  (standin: a fixture)

from tgrs_agents.errors import TeacherError
from tgrs_agents.paid.batch import BatchLimits
from tgrs_agents.paid.batch_runner import BatchRunner
from tgrs_agents.paid.call import Paid
from tgrs_agents.paid.retry import RetryPolicy

pytest.importorskip("openai")
pytest.importorskip("anthropic")
PROVIDERS = ["openai", "anthropic"]


def runner(provider, srv, clock, run_dir, **kw):
    return BatchRunner(client(provider, srv, **kw.pop("client_kw", {})), run_dir, poll_s=30, sleep=clock.sleep,
                       clock=clock, retry=RetryPolicy(initial_s=0.0, jitter_s=0.0), **kw)


async def collect(r, stop_after=None):
    out = []
    try:
        async for cand, ans in r.collect():
            out.append((cand, ans))
            if stop_after is not None and len(out) >= stop_after:
                break
    finally:
        await r.client.aclose()
    return out


def journal(run_dir):
    return [json.loads(x) for x in (run_dir / "batches.jsonl").read_text().splitlines()]


def killing(c, *, after: bool, calls: int = 1):
    """Make ``c.submit`` die before (or just after) the provider takes the batch, on its ``calls``-th call."""
    real, n = c.submit, [0]

    async def submit(reqs, key):
        n[0] += 1
        if n[0] != calls:
            return await real(reqs, key)
        if after:
            await real(reqs, key)
        raise Killed

    c.submit = submit


@pytest.mark.parametrize("provider", PROVIDERS)
def test_journal_first_then_collect_every_answer_once(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin(batch_delay_s=100)
    r = runner(provider, srv, clock, tmp_path, client_kw={"limits": BatchLimits(3, 10**9)})
    its = items(provider, 7, bad=frozenset({4}))

    async def go():
        keys = await r.submit(its)
        flight = r.in_flight()
        return keys, flight, await collect(r)

    keys, flight, got = asyncio.run(go())
    assert len(keys) == 3 and srv.stats["batches"] == 3 and srv.stats["batch_items"] == 7
    assert [f["items"] for f in flight] == [3, 3, 1] and all(f["state"] == "submitted" for f in flight)
    assert sorted(c for c, _ in got) == sorted(c for c, _ in its)
    assert {c: passed(provider, a.value) for c, a in got} == {c: c != "cand/4 x" for c, _ in its}
    evs = [(x["ev"], x["key"]) for x in journal(tmp_path)]
    for k in keys:  # intent before submitted before ended, for each batch
        assert [e for e, key in evs if key == k] == ["intent", "submitted", "ended"]
    assert clock.slept and set(clock.slept) == {30} and not r.in_flight()
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == sorted(f"{k}.jsonl" for k in keys)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("after", [False, True], ids=["before-provider", "after-provider"])
def test_kill_between_journal_and_submission(standin, provider, after, tmp_path):  # noqa: F811
    srv, clock = standin(batch_delay_s=60)
    its = items(provider, 4)
    r = runner(provider, srv, clock, tmp_path)
    killing(r.client, after=after)
    with pytest.raises(Killed):
        asyncio.run(r.submit(its))
    assert [x["ev"] for x in journal(tmp_path)] == ["intent"]  # the intent was on disk before the provider heard
    assert srv.stats["batches"] == (1 if after else 0)

    got = asyncio.run(collect(runner(provider, srv, clock, tmp_path)))  # the same command again
    assert srv.stats["batches"] == 1 and srv.stats["batch_items"] == 4  # neither lost nor duplicated
    assert sorted(c for c, _ in got) == sorted(c for c, _ in its) and all(isinstance(a, Paid) for _, a in got)
    sub = next(x for x in journal(tmp_path) if x["ev"] == "submitted")
    assert sub["adopted"] is after


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_lost_create_answer_is_adopted_not_repeated(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin()
    # the create takes effect, its answer is lost; the retry looks for the key before creating again
    srv.batches.script.extend(["ok", "drop_after"] if provider == "openai" else ["drop_after"])  # ok: the upload
    got = asyncio.run(_submit_collect(runner(provider, srv, clock, tmp_path), items(provider, 3)))
    assert srv.stats["batches"] == 1 and len(got) == 3
    assert next(x for x in journal(tmp_path) if x["ev"] == "submitted")["adopted"] is True


async def _submit_collect(r, its):
    await r.submit(its)
    return await collect(r)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failed_items_are_resubmitted_alone(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin(p_batch_item_error=0.4, seed=5)
    its = items(provider, 20)
    got = asyncio.run(_submit_collect(runner(provider, srv, clock, tmp_path, max_resubmits=3), its))
    recs = journal(tmp_path)
    intents = [x for x in recs if x["ev"] == "intent"]
    ended = {x["key"]: x for x in recs if x["ev"] == "ended"}
    assert len(intents) >= 2 and intents[1]["parent"] == intents[0]["key"] and intents[1]["attempt"] == 1
    for parent, child in itertools.pairwise(intents):  # a child holds exactly its parent's failures
        assert child["n"] == ended[parent["key"]]["resubmitted"] > 0
    assert srv.stats["batch_items"] == sum(x["n"] for x in intents)
    assert sorted(c for c, _ in got) == sorted(c for c, _ in its)  # each candidate answered once
    errs = [a for _, a in got if isinstance(a, TeacherError)]
    assert all(a.retryable and a.kind == "server" for a in errs)
    assert not errs if intents[-1]["attempt"] < 3 else len(errs) <= intents[-1]["n"]  # only the last try's


@pytest.mark.parametrize("provider", PROVIDERS)
def test_expired_items_are_resubmitted(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin(batch_delay_s=100, batch_expire_s=50)
    real_sleep = clock.sleep

    async def sleep(s):
        await real_sleep(s)
        if srv.stats["batches"] == 2:  # the first expired, its leftovers went out again
            srv.plan.batch_expire_s = None  # the provider catches up: the resubmitted batch completes

    clock.sleep = sleep
    its = items(provider, 10)
    got = asyncio.run(_submit_collect(runner(provider, srv, clock, tmp_path), its))
    ends = [x for x in journal(tmp_path) if x["ev"] == "ended"]
    assert [e["status"] for e in ends] == ["expired" if provider == "openai" else "completed", "completed"]
    assert ends[0]["resubmitted"] == 5 and srv.stats["batch_items"] == 15
    assert sorted(c for c, _ in got) == sorted(c for c, _ in its) and all(isinstance(a, Paid) for _, a in got)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_cancellation_is_reported_not_resubmitted(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin(batch_delay_s=100, p_batch_cancel=1.0)
    its = items(provider, 6)
    r = runner(provider, srv, clock, tmp_path)
    got = asyncio.run(_submit_collect(r, its))
    assert len(r.reported) == 1 and "cancelled" in r.reported[0] and srv.stats["batches"] == 1
    assert sum(isinstance(a, Paid) for _, a in got) == 3 and len(got) == 6
    assert all(not a.retryable for _, a in got if isinstance(a, TeacherError))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_our_own_cancel_is_not_reported(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin(batch_delay_s=100)
    r = runner(provider, srv, clock, tmp_path)

    async def go():
        [key] = await r.submit(items(provider, 4))
        clock.t += 50
        await r.cancel(key)
        return await collect(r)

    got = asyncio.run(go())
    assert not r.reported and len(got) == 4 and sum(isinstance(a, Paid) for _, a in got) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_kill_after_delivery_before_the_end_record_pays_nothing_twice(standin, provider, tmp_path):  # noqa: F811
    srv, clock = standin(p_batch_item_error=0.5, seed=1)
    its = items(provider, 8)
    r = runner(provider, srv, clock, tmp_path)
    killing(r.client, after=False, calls=2)  # the resubmission of the failures dies before the provider
    with pytest.raises(Killed):
        asyncio.run(_submit_collect(r, its))
    before = (srv.stats["batches"], srv.stats["batch_items"])
    first = asyncio.run(collect(runner(provider, srv, clock, tmp_path), stop_after=1))
    got = asyncio.run(collect(runner(provider, srv, clock, tmp_path)))
    recs = journal(tmp_path)
    intents = [x for x in recs if x["ev"] == "intent"]
    assert before == (1, 8) and sum(x["parent"] == intents[0]["key"] for x in intents) == 1  # the root was re-read
    # one provider batch per journaled intent (none twice), each holding what its intent says
    assert srv.stats["batches"] == len(intents) and srv.stats["batch_items"] == sum(x["n"] for x in intents)
    assert len(first) == 1 and sorted(c for c, _ in got) == sorted(c for c, _ in its)


def test_anthropic_adopted_batch_that_proves_foreign_is_replaced(standin, tmp_path):  # noqa: F811
    """Anthropic batches carry no metadata: a same-size batch made since the intent is adopted while it runs,
    and when its answers carry another key the run submits its own (the residual risk: a wait, not a loss)."""
    srv, clock = standin(batch_delay_s=60)
    its = items("anthropic", 4)
    r = runner("anthropic", srv, clock, tmp_path)
    killing(r.client, after=False)
    with pytest.raises(Killed):
        asyncio.run(r.submit(its))

    async def someone_else():
        c = client("anthropic", srv)
        await c.submit([(f"zz_{i}", b) for i, (_, b) in enumerate(its)], "zz")
        await c.aclose()

    asyncio.run(someone_else())
    r2 = runner("anthropic", srv, clock, tmp_path)
    got = asyncio.run(collect(r2))
    assert next(x for x in journal(tmp_path) if x["ev"] == "submitted")["adopted"] is True
    assert len(r2.reported) == 1 and "not ours" in r2.reported[0] and srv.stats["batches"] == 2
    assert sorted(c for c, _ in got) == sorted(c for c, _ in its) and all(isinstance(a, Paid) for _, a in got)
