"""What the API-judge tests share (tests/paid, tests/teachers): keys, teacher tables, a panel built the
way ``tgrs curate`` builds it, candidates.

Teachers go through ``Panel.from_config`` with ``Services``, so every call crosses
Cached(Retrying(Costed(RateLimited(adapter)))) -> SDK -> socket. The retry policy is injected through
the services (:data:`FAST`: short back-off so retried faults cost milliseconds); Retry-After is
honoured as the server sends it.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.panel_file import panel_from_dict
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.retry import RetryPolicy
from tgrs_agents.paid.services import Services
from tgrs_agents.tasks.arithmetic_data import trajectory
from tgrs_agents.testing.standin import StandIn
from tgrs_agents.types import Candidate, Verdict

OA_ENV, AN_ENV, OTHER_ENV = "TGRS_TEST_OA_KEY", "TGRS_TEST_AN_KEY", "TGRS_TEST_OTHER_KEY"
OA_KEY = "sk-test-oa-4f1c8e2d9b7a6053"
AN_KEY = "sk-test-an-93b2d7e1c0f4a865"
OTHER_KEY = "sk-test-other-1a2b3c4d5e6f"
KEYS = (OA_KEY, AN_KEY, OTHER_KEY)
RUBRIC = "The final answer must equal the reference (rubric-marker-77)."
PRICE_IN, PRICE_OUT = 2.0, 8.0  # USD per million tokens
KINDS = ("openai", "anthropic")
FAST = RetryPolicy(initial_s=0.01, max_wait_s=2.0, jitter_s=0.01)


def set_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OA_ENV, OA_KEY)
    monkeypatch.setenv(AN_ENV, AN_KEY)
    monkeypatch.setenv(OTHER_ENV, OTHER_KEY)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def table(kind: str, s: StandIn, **kw: Any) -> dict[str, Any]:
    t = {
        "name": "gpt" if kind == "openai" else "claude",
        "kind": kind,
        "model": "gpt-judge-test" if kind == "openai" else "claude-judge-test",
        "base_url": s.url_openai if kind == "openai" else s.url_anthropic,
        "api_key_env": OA_ENV if kind == "openai" else AN_ENV,
        "rubric": RUBRIC,
        "max_tokens": 64,
        "timeout_s": 5.0,
        "max_attempts": 5,
        "price_input_per_mtok": PRICE_IN,
        "price_output_per_mtok": PRICE_OUT,
    }
    t.update(kw)
    return t


def build(tmp_path: Path, *tables: dict[str, Any], ledger: Ledger | None = None,
          services: Services | None = None) -> tuple[Panel, Services]:
    cfg = panel_from_dict({"policy": "unanimous", "teacher": list(tables)}, base_dir=tmp_path)
    svc = services or Services(ledger=ledger, retry=FAST)
    return Panel.from_config(cfg, svc), svc


def limiter(svc: Services) -> Any:
    (lim,) = svc.limiters.all().values()
    return lim


def cand(i: int, flavour: str = "good", seed: int | None = None) -> Candidate:
    rng = random.Random(i if seed is None else seed)
    return Candidate.model_validate(trajectory(i, rng, flavour=flavour))


async def judge1(panel: Panel, c: Candidate) -> Verdict:
    """The one teacher's verdict as the panel records it (errors become error verdicts)."""
    _, new = await panel.judge(c)
    (v,) = new
    return v


def price(in_tok: int, out_tok: int) -> float:
    return (in_tok * PRICE_IN + out_tok * PRICE_OUT) / 1e6


def prompt_of(req: dict[str, Any]) -> str:
    (msg,) = req["body"]["messages"]
    return msg["content"] if isinstance(msg["content"], str) else msg["content"][0]["text"]
