import os
import stat

import pytest

from tgrs_agents.errors import BudgetExhausted
from tgrs_agents.paid.cost import Budget, Price, default_price
from tgrs_agents.paid.ledger import Ledger, content_hash, default_ledger_path, teacher_key
from tgrs_agents.types import Candidate, Verdict


def cand(answer="Answer: 4", cid="a", ref=4):
    return Candidate(id=cid, messages=[{"role": "user", "content": "2+2?"},
                                       {"role": "assistant", "content": answer}], reference=ref)


def test_ledger_roundtrip_mode_0600_and_errors_not_stored(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    v = Verdict(teacher="j", passed=True, score=0.9, rationale="fine")
    led.put("k", v)
    led.put("e", Verdict.failure("j", "HTTP 500"))
    assert led.get("k") == v
    assert led.get("e") is None
    assert stat.S_IMODE(os.stat(tmp_path / "l.sqlite").st_mode) == 0o600
    led.close()
    again = Ledger(tmp_path / "l.sqlite")  # shared across runs
    assert again.get("k") == v


def test_default_ledger_location(monkeypatch, tmp_path):
    monkeypatch.setenv("TGRS_CACHE_DIR", str(tmp_path))
    assert default_ledger_path() == tmp_path / "verdicts.sqlite"
    monkeypatch.delenv("TGRS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_ledger_path() == tmp_path / "xdg" / "tgrs-agents" / "verdicts.sqlite"


def test_content_hash_ignores_ids_but_not_content():
    assert content_hash(cand(cid="a")) == content_hash(cand(cid="b"))
    assert content_hash(cand()) != content_hash(cand(answer="Answer: 5"))
    assert content_hash(cand()) != content_hash(cand(ref=5))


def test_teacher_key_depends_on_prompt_and_identity():
    ident = {"kind": "openai", "model": "m", "temperature": 0.0}
    k = teacher_key(ident, "prompt-hash-1")
    assert k == teacher_key(dict(ident), "prompt-hash-1")
    assert k != teacher_key(ident, "prompt-hash-2")
    assert k != teacher_key({**ident, "temperature": 0.5}, "prompt-hash-1")


def test_budget_refuses_before_passing_the_cap():
    b = Budget(limit_usd=1.0)
    t1 = b.reserve(0.4)
    t2 = b.reserve(0.4)
    with pytest.raises(BudgetExhausted):
        b.reserve(0.3)  # 0.8 in flight + 0.3 would pass 1.0
    b.settle(t1, 0.1)  # cheaper than estimated
    b.reserve(0.3)
    b.settle(t2, 0.4)
    assert b.spent_usd == pytest.approx(0.5)
    assert b.refused == 1


def test_prices():
    assert Price(1.0, 2.0).cost(1_000_000, 500_000) == pytest.approx(2.0)
    assert default_price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)  # longest prefix wins
    assert default_price("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert default_price("my-local-model") is None
