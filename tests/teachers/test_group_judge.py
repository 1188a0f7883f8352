"""Group judging (``mode = "group"``, ``tgrs_agents.teachers.group_judge``) through the real SDKs against the
loopback stand-in: one call scores every candidate of a task, the usage is shared out, ``debias = "swap"``
reports position consistency, malformed group output is retried, the ledger serves a re-run, best_k ranks by
the group's scores, and a group call costs less per candidate than pointwise judging."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import pytest
from api_judge_kit import FAST, KINDS, build, run, set_keys, table

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.panel_file import panel_from_dict
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.services import Services
from tgrs_agents.tasks.arithmetic_data import make_problem, trajectory
from tgrs_agents.teachers.group_judge import GroupTeacher, parse_group, score_group
from tgrs_agents.testing.standin import StandIn, default_brain
from tgrs_agents.types import Candidate

pytest.importorskip("openai")
pytest.importorskip("anthropic")

FLAVOURS = ("good", "wrong_copy", "good", "no_marker")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    set_keys(monkeypatch)


def group_brain(first_wins: bool = False):
    """Scores each ``<candidate id>`` of a group prompt as the default brain would score it alone;
    ``first_wins``: a position-biased judge that also passes whatever it reads first."""
    def brain(prompt: str) -> dict[str, Any]:
        blocks = re.findall(r'<candidate id="(\d+)">.*?<final>(.*?)</final>', prompt, re.S)
        if not blocks:
            return default_brain(prompt)
        ref = re.findall(r"<reference>(.*?)</reference>", prompt, re.S)[0]
        out = []
        for i, final in blocks:
            v = default_brain(f"<reference>{ref}</reference><final>{final}</final>")
            if first_wins and i == "1":
                v = {"score": 10, "passed": True, "rationale": "first is best"}
            out.append({"id": i, **v})
        return {"scores": out}
    return brain


def task_cands(task: int = 0, flavours: tuple[str, ...] = FLAVOURS) -> list[Candidate]:
    rng = random.Random(task)
    expr, value = make_problem(rng)
    return [Candidate.model_validate(trajectory(100 * task + i, rng, task_id=f"T{task}", flavour=f, expr=expr,
                                                value=value)) for i, f in enumerate(flavours)]


def group_table(kind: str, s: StandIn, **kw: Any) -> dict[str, Any]:
    return table(kind, s, mode="group", group_wait_ms=30, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_one_call_scores_every_candidate_of_a_task(kind, tmp_path):
    with StandIn(brain=group_brain()) as s:
        async def main():
            panel, _ = build(tmp_path, group_table(kind, s))
            try:
                return await asyncio.gather(*(panel.judge(c) for c in task_cands())), panel
            finally:
                await panel.aclose()

        results, panel = run(main())
        (req,) = s.requests
    assert [d.accepted for d, _ in results] == [True, False, True, False]
    verdicts = [new[0] for _, new in results]
    assert [v.usage.requests for v in verdicts] == [1, 0, 0, 0]  # one call, its usage shared out
    total_in = sum(v.usage.input_tokens for v in verdicts)
    assert total_in == verdicts[0].usage.input_tokens + 3 * verdicts[1].usage.input_tokens > 0
    assert panel.stats["gpt" if kind == "openai" else "claude"].requests == 1
    body = req["body"]
    text = body["messages"][0]["content"]
    assert len(re.findall(r'<candidate id="\d+">', text)) == 4 and text.count("What is") == 1
    if kind == "openai":
        assert body["response_format"]["json_schema"]["name"] == "scores" and body["seed"] == 0
    else:
        assert body["tool_choice"]["name"] == "record_scores" and "seed" not in body
    assert body.get("temperature", body.get("extra_body", {}).get("temperature")) == 0.0
    assert panel.jury_report()["group"][verdicts[0].teacher]["calls_per_candidate"] == 0.25


def test_swap_judges_both_orders_and_reports_position_consistency(tmp_path):
    with StandIn(brain=group_brain(first_wins=True)) as s:
        async def main():
            panel, _ = build(tmp_path, group_table("openai", s, debias="swap"))
            try:
                return await asyncio.gather(*(panel.judge(c) for c in task_cands())), panel
            finally:
                await panel.aclose()

        results, panel = run(main())
        assert s.stats["requests"] == 2
        first, second = (r["body"]["messages"][0]["content"] for r in s.requests)
    order = lambda text: re.findall(r"Answer: (-?\d+)|The result is (-?\d+)", text)  # noqa: E731
    assert order(first) == order(second)[::-1]
    # the biased judge passed whatever came first: the last candidate (first in reverse) only once
    assert [d.accepted for d, _ in results] == [True, False, True, False]
    stats = panel.jury_report()["group"]["gpt"]
    assert stats["position_consistency"] == 0.75  # the last flipped with its position (the first is good)
    assert stats["top_position_consistency"] == 0.0 and stats["calls"] == 2


def test_malformed_group_output_is_retried_and_a_missing_candidate_is_malformed(tmp_path):
    calls = []

    def brain(prompt: str) -> dict[str, Any]:
        out = group_brain()(prompt)
        calls.append(1)
        if len(calls) == 1:
            out["scores"] = out["scores"][:-1]  # one candidate left out: the call is malformed
        return out

    with StandIn(brain=brain) as s:
        async def main():
            panel, _ = build(tmp_path, group_table("anthropic", s))
            try:
                return await asyncio.gather(*(panel.judge(c) for c in task_cands())), panel
            finally:
                await panel.aclose()

        results, panel = run(main())
    assert s.stats["requests"] == 2 and all(d.accepted is not None for d, _ in results)
    assert panel.stats["claude"].requests == 2  # both attempts billed
    with pytest.raises(ValueError, match="missing"):
        parse_group({"scores": [{"id": "1", "score": 5, "passed": True, "rationale": ""}]}, 2)


def test_the_ledger_serves_a_rerun_and_score_group_returns_scores(tmp_path):
    led = Ledger(tmp_path / "ledger.sqlite")
    with StandIn(brain=group_brain()) as s:
        async def main():
            svc = Services(ledger=led, retry=FAST)
            cfg = panel_from_dict({"teacher": [group_table("openai", s)]}, base_dir=tmp_path)
            panel = Panel.from_config(cfg, svc)
            (teacher,) = panel.teachers
            assert isinstance(teacher, GroupTeacher)
            try:
                first = await score_group(teacher, task_cands())
                again = await score_group(teacher, task_cands())
            finally:
                await panel.aclose()
            return first, again

        first, again = run(main())
        assert s.stats["requests"] == 1
    led.close()
    assert first == again and len(first) == 4
    assert first["cand-0"] == 0.9 and first["cand-1"] == 0.2


def test_best_k_ranks_by_the_group_scores(tmp_path):
    def brain(prompt: str) -> dict[str, Any]:
        out = group_brain()(prompt)
        if "scores" in out:
            out["scores"][-1]["score"] = 10  # the second good candidate is the better one
        return out

    with StandIn(brain=brain) as s:
        async def main():
            cfg = panel_from_dict({"policy": "unanimous", "best_k": 1, "teacher": [
                {"name": "answer", "kind": "final_answer", "cost_rank": 0}, group_table("openai", s)]},
                base_dir=tmp_path)
            panel = Panel.from_config(cfg, Services(retry=FAST))
            try:
                return await asyncio.gather(*(panel.judge(c) for c in task_cands())), panel
            finally:
                await panel.aclose()

        results, panel = run(main())
        (req,) = s.requests
    # the verifier's rejects never take a seat in the comparison
    assert len(re.findall(r'<candidate id="\d+">', req["body"]["messages"][0]["content"])) == 2
    scores = {d.candidate_id: d.score for d, _ in results if d.accepted}
    assert scores == {"cand-0": 0.9, "cand-2": 1.0}
    assert panel.policy.rankers == ("gpt",)


def test_a_group_call_costs_less_per_candidate_than_pointwise_judging(tmp_path):
    with StandIn(brain=group_brain()) as s:
        async def main(**kw: Any) -> float:
            panel, _ = build(tmp_path, table("openai", s, **kw))
            try:
                await asyncio.gather(*(panel.judge(c) for t in range(3) for c in task_cands(t)))
            finally:
                await panel.aclose()
            return panel.stats["gpt"].cost_usd / 12

        pointwise = run(main())
        grouped = run(main(mode="group", group_wait_ms=30))
    assert grouped < 0.8 * pointwise


def test_group_mode_is_validated(tmp_path: Path) -> None:
    from tgrs_agents.errors import ConfigError

    with StandIn() as s:
        with pytest.raises(ConfigError, match="debias = 'swap' needs mode = 'group'"):
            panel_from_dict({"teacher": [table("openai", s, debias="swap")]}, base_dir=tmp_path)
        with pytest.raises(ConfigError, match="repeats is not supported for mode = 'group'"):
            panel_from_dict({"teacher": [{**group_table("openai", s), "repeats": 3}]}, base_dir=tmp_path)
