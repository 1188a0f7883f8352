import os
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from tgrs_agents.errors import BudgetExhausted, ConfigError
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


# --- a ledger that cannot be used is said once, before any call ------------------------------------
def test_a_ledger_that_is_not_a_database_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "l.sqlite"
    path.write_bytes(b"this is not an SQLite file\n" * 200)
    with pytest.raises(ConfigError) as ei:
        Ledger(path).check()
    msg = str(ei.value)
    assert msg.startswith(f"{path}: ") and "--no-cache" in msg and "\n" not in msg


def test_a_ledger_with_a_damaged_page_fails_its_check(tmp_path):
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    for i in range(2000):
        led.put(f"k{i}", Verdict(teacher="j", passed=True, score=0.5, rationale="x" * 200))
    led.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    led.close()
    Ledger(path).check()  # healthy
    data = bytearray(path.read_bytes())
    page = 4096
    for off in range(3 * page, len(data) - page, 7 * page):  # scribble over a few b-tree pages
        data[off + 8: off + 600] = os.urandom(592)
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"quick_check|malformed|not a database") as ei:
        Ledger(path).check()
    assert str(path) in str(ei.value) and "--no-cache" in str(ei.value)


def test_a_ledger_written_before_verdicts_carried_their_payer_still_reads(tmp_path):
    path = tmp_path / "old.sqlite"
    v = Verdict(teacher="j", passed=True, score=0.9)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE verdicts (key TEXT PRIMARY KEY, teacher TEXT, verdict TEXT NOT NULL, created REAL)")
    db.execute("INSERT INTO verdicts VALUES (?, ?, ?, ?)", ("k", "j", v.model_dump_json(), 0.0))
    db.commit()
    db.close()
    led = Ledger(path, owner="run-1")
    led.check()
    assert led.get("k") == v and led.take("k") == (v, False)  # nobody owes an old verdict
    led.put("k2", v)
    assert led.take("k2") == (v, True) and led.take("k2") == (v, False)
    led.close()


WRITER = r'''
import sys, time
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.types import Verdict
path, me, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
led = Ledger(path, owner=me)
start = float(sys.argv[4])
while time.time() < start:  # both processes create and open a file that does not exist yet, at once
    time.sleep(0.001)
led.check()
for i in range(n):
    key = f"shared-{i}" if i % 3 == 0 else f"{me}-{i}"
    led.put(key, Verdict(teacher=me, passed=bool(i % 2), score=i / n))
    led.get(f"shared-{i // 2}")
    led.take(key)
    led.settle(key)
led.close()
'''


def test_two_processes_write_one_ledger_at_once_without_corruption_or_crash(tmp_path):
    path, n = tmp_path / "fresh" / "l.sqlite", 1500
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), me, str(n), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for me in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outs]
    led = Ledger(path)
    led.check()
    own = n - len(range(0, n, 3))
    assert len(led) == 2 * own + len(range(0, n, 3))  # every key, the shared ones once
    assert led.get("a-1") is not None and led.get("b-1") is not None
    led.close()
