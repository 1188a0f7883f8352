"""No input or fault ends ``tgrs curate`` in a traceback or a silent failure (issue 10, items 3-5).

Each test is a defect seen from the command line: a record that validates but cannot be written, a
damaged line in the middle of an output, a damaged id index, ``--panel DIR``, a full disk, a
read-only directory, a damaged verdict ledger, a refused API key, an endpoint that does not answer,
and paid verdicts lost at a stop. What each must show: one line naming the cause (exit 2) or a
warning, never a traceback; and once the cause is fixed, the run resumes to exactly what an
uninterrupted run holds, with no verdict paid twice and every paid verdict's cost counted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.cli import main as cli_main
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
VERIFIERS = ROOT / "teachers" / "panel-verifiers.toml"
DECISIONS = ("accepted", "rejected", "invalid")


@pytest.fixture(autouse=True)
def private_verdict_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRS_CACHE_DIR", str(tmp_path / "cache"))


def curate(inp: Path, out: Path, *args: str, panel: Path = VERIFIERS,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | None, str]:
    """``tgrs curate`` in-process: (exit code, the JSON summary or None, stderr)."""
    rc = cli_main(["curate", str(inp), "--panel", str(panel), "--out", str(out), "--quiet", "--json", *args])
    got = capsys.readouterr()
    return rc, (json.loads(got.out) if rc == 0 else None), got.err


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSONL file (one being written, or cut by a kill, may end in a part)."""
    data = path.read_bytes() if path.exists() else b""
    return [json.loads(x) for x in data[: data.rfind(b"\n") + 1].splitlines() if x.strip()]


def errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("tgrs: error:")]


def assert_one_line_error(rc: int, stderr: str, *needles: str) -> str:
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    (line,) = errors(stderr)
    for n in needles:
        assert n in line, line
    return line


def outcome(out: Path) -> dict[str, set[tuple[int, str | None]]]:
    """Each decision file as a set of (line, id); asserts no line is recorded twice."""
    lines = Counter(r["line"] for name in DECISIONS for r in jsonl(out / f"{name}.jsonl"))
    assert not lines or max(lines.values()) == 1, [k for k, n in lines.items() if n > 1][:5]
    return {name: {(r["line"], r["id"]) for r in jsonl(out / f"{name}.jsonl")} for name in DECISIONS}


def assert_same_as(out: Path, ref: Path) -> None:
    assert outcome(out) == outcome(ref)
    pairs = Counter((v["line"], v["teacher"]) for v in jsonl(out / "verdicts.jsonl"))
    assert max(pairs.values()) == 1  # no verdict journaled twice
    s = json.loads((out / "summary.json").read_text())
    assert s["pending"] == 0 and s["stopped"] is None


def fd_name(fd: int) -> str:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}")).name
    except OSError:
        return ""


# --- 3. no record can crash a run ---------------------------------------------------------------
def test_a_record_that_validates_but_cannot_be_written_is_set_aside_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 30, seed=1)
    rows = [json.loads(x) for x in inp.read_text().splitlines()]
    rows[4]["messages"][0]["n"] = 2**70  # kept by extra="allow", written to accepted.jsonl
    rows[9]["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"maximum": -(2**64)}}}]
    rows[14]["reference"] = 2**80  # hashed for the verdict ledger
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    rc, s, err = curate(inp, out, capsys=capsys)
    assert rc == 0, err
    assert s is not None and s["invalid"] == 3 and s["accepted"] + s["rejected"] == 27
    got = {r["line"]: r for r in jsonl(out / "invalid.jsonl")}
    assert {n: got[n]["field"] for n in got} == {
        5: "messages[0].n", 10: "tools[0].function.parameters.maximum", 15: "reference"}
    assert all("64-bit" in r["reason"] and f"{inp}:{n}" in r["reason"] for n, r in got.items())
    rc, s2, err = curate(inp, out, capsys=capsys)  # and a resume does not trip on it either
    assert rc == 0 and s2 is not None and s2["invalid"] == 3 and s2["pending"] == 0, err


RATIONALE = '''
def check(candidate):
    return True, "looks fine \\ud800 (a lone surrogate: not UTF-8)"
'''


def test_a_verdict_that_cannot_be_written_as_it_is_is_written_cleaned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 10, seed=2)
    (tmp_path / "odd.py").write_text(RATIONALE)
    panel = tmp_path / "panel.toml"
    panel.write_text('policy = "unanimous"\n\n[[teacher]]\nname = "odd"\nkind = "python"\n'
                     f'function = "{tmp_path / "odd.py"}:check"\n')
    out = tmp_path / "run"
    rc, s, err = curate(inp, out, panel=panel, capsys=capsys)
    assert rc == 0 and s is not None and s["accepted"] == 10, err
    vs = jsonl(out / "verdicts.jsonl")
    assert len(vs) == 10 and all(v["rationale"].startswith("looks fine ") for v in vs)


def test_an_error_while_recording_one_record_sets_it_aside_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Defence in depth: should a record slip past the ingest check, the recorder sets it aside."""
    from tgrs_agents.curation import ingest

    inp = write_synthetic(tmp_path / "in.jsonl", 20, seed=3)
    rows = [json.loads(x) for x in inp.read_text().splitlines()]
    rows[6]["messages"][-1]["extra"] = {"deep": [1, 2**65]}
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(ingest, "candidate_problem", lambda c: None)  # the ingest check misses it
    out = tmp_path / "run"
    rc, s, err = curate(inp, out, capsys=capsys)
    assert rc == 0, err
    (bad,) = jsonl(out / "invalid.jsonl")
    last = len(rows[6]["messages"]) - 1
    assert bad["line"] == 7 and bad["field"] == f"messages[{last}].extra.deep[1]"
    assert "could not be written" in bad["reason"] and s is not None and s["invalid"] == 1
    assert s["accepted"] + s["rejected"] == 19 and s["pending"] == 0
    rc, s, err = curate(inp, out, capsys=capsys)
    assert rc == 0 and s is not None and s["pending"] == 0, err


# --- 4. damaged files: set aside or rebuilt, with a warning ---------------------------------------
def test_a_torn_line_in_the_middle_of_an_output_is_set_aside_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 40, seed=4, bad_every=13)
    ref = tmp_path / "ref"
    assert curate(inp, ref, capsys=capsys)[0] == 0
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    for name, k in (("accepted", 2), ("verdicts", 7), ("events", 5)):
        lines = (out / f"{name}.jsonl").read_bytes().splitlines(keepends=True)
        lines[k] = lines[k][: len(lines[k]) // 2] + b"\n"  # cut mid-record, the file goes on
        (out / f"{name}.jsonl").write_bytes(b"".join(lines))
    rc, s, err = curate(inp, out, capsys=capsys)
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("tgrs: warning:")]
    assert len(warnings) == 3 and s is not None and len(s["warnings"]) == 3
    assert any(f"{out / 'accepted.jsonl'}:3: 1 damaged line(s)" in w for w in warnings)
    torn = jsonl(out / "torn-lines.jsonl")
    assert sorted((t["file"], t["line_no"]) for t in torn) == [
        ("accepted.jsonl", 3), ("events.jsonl", 6), ("verdicts.jsonl", 8)]
    assert outcome(out) == outcome(ref)  # the torn decision was made again, nothing twice
    for name in ("accepted", "verdicts", "events"):
        jsonl(out / f"{name}.jsonl")  # every line whole again


def test_a_damaged_id_index_is_rebuilt_from_the_outputs(tmp_path: Path) -> None:
    """The index must still know the ids decided before it was lost: a later line that repeats one
    of them is a duplicate, even though the session that decided it is gone."""
    from test_run import Scripted, make_run, rule_a, rule_b, wait_until, write_input

    n = 40
    inp = write_input(tmp_path / "in.jsonl", n, [json.dumps({
        "id": "c3", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})])
    out = tmp_path / "run"
    b = Scripted("b", 1, rule_b, block_after=10)

    async def first() -> None:
        job = asyncio.create_task(make_run(tmp_path, inp, out, [Scripted("a", 0, rule_a), b],
                                           max_in_flight=2, commit_interval_s=0.0).run())
        await wait_until(lambda: len(b.done) >= 10 and b.in_flight >= 1, "some decisions")
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(first())
    assert 3 + 1 in {r["line"] for r in jsonl(out / "accepted.jsonl") + jsonl(out / "rejected.jsonl")}
    for suffix in ("-wal", "-shm"):
        Path(f"{out / 'ids.sqlite'}{suffix}").unlink(missing_ok=True)
    (out / "ids.sqlite").write_bytes(b"garbage, not SQLite" * 300)
    s = asyncio.run(make_run(tmp_path, inp, out, [Scripted("a", 0, rule_a), Scripted("b", 1, rule_b)]).run())
    assert s["pending"] == s["failed"] and any("ids.sqlite" in w and "rebuilt" in w for w in s["warnings"])
    (dup,) = [r for r in jsonl(out / "invalid.jsonl") if r["line"] == n + 1]
    assert dup["field"] == "id" and "first used on line 4" in dup["reason"]


def test_panel_given_a_directory_is_one_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 5, seed=5)
    rc, _, err = curate(inp, tmp_path / "run", panel=tmp_path, capsys=capsys)
    assert_one_line_error(rc, err, f"tgrs: error: {tmp_path}: expected a panel TOML file, got a directory")
    assert not (tmp_path / "run").exists()


# --- 4. OS errors: one line, the file and the cause; the run resumes once it is fixed -------------
def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes_exactly_once_fixed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 600, seed=6, bad_every=37)
    ref = tmp_path / "ref"
    assert curate(inp, ref, capsys=capsys)[0] == 0
    out = tmp_path / "run"
    real_write = os.write
    seen = Counter()

    def full_disk(fd: int, data: Any) -> int:
        name = fd_name(fd)
        if name == "accepted.jsonl":
            seen[name] += 1
            if seen[name] > 0:  # the first commit of decisions finds the disk full, half way
                real_write(fd, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", full_disk)
        rc, _, err = curate(inp, out, "--max-in-flight", "8", capsys=capsys)
    line = assert_one_line_error(rc, err, f"{out / 'accepted.jsonl'}: cannot write: No space left on device",
                                 "run the same command again")
    assert line.startswith("tgrs: error: ")
    assert (out / "accepted.jsonl").read_bytes() == b""  # the half commit written was taken back
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"].startswith("error: ") and s["pending"] > 0
    rc, s2, err = curate(inp, out, capsys=capsys)
    assert rc == 0, err
    assert_same_as(out, ref)
    assert s2 is not None and not s2["warnings"]


def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    p = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && umount /mnt"],
                       capture_output=True)
    return p.returncode == 0


needs_mounts = pytest.mark.skipif(not unshare_available(), reason="needs mount namespaces (unshare -rm)")

# In a private mount namespace: a run directory on a tiny tmpfs fills it; growing the tmpfs fixes it.
# Then a read-only mount of a finished run, then writable again. Each step's exit code and stderr are
# saved for the test, and the directory is copied out before the namespace ends.
DISK_SCRIPT = r'''
set -u
mnt="$1"; inp="$2"; panel="$3"; keep="$4"; py="$5"
run() {
  "$py" -m tgrs_agents curate "$inp" --panel "$panel" --out "$mnt/run" --quiet > /dev/null 2> "$keep/$1.err"
  echo $? > "$keep/$1.rc"
}
mount -t tmpfs -o size=160k tmpfs "$mnt" || exit 97
run full
mount -o remount,size=64m "$mnt"
run grown
cp -a "$mnt/run" "$keep/run"
mount -o remount,ro "$mnt"
run readonly
mount -o remount,rw "$mnt"
run writable
'''


@needs_mounts
def test_a_real_full_disk_and_a_read_only_directory(tmp_path: Path) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 1500, seed=7, bad_every=41)
    ref = tmp_path / "ref"
    p = subprocess.run([sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(VERIFIERS),
                        "--out", str(ref), "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    mnt, keep = tmp_path / "mnt", tmp_path / "keep"
    mnt.mkdir()
    keep.mkdir()
    p = subprocess.run(["unshare", "-rm", "sh", "-c", DISK_SCRIPT, "sh", str(mnt), str(inp), str(VERIFIERS),
                        str(keep), sys.executable], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TGRS_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr

    def step(name: str) -> tuple[int, str]:
        return int((keep / f"{name}.rc").read_text()), (keep / f"{name}.err").read_text()

    rc, err = step("full")
    assert_one_line_error(rc, err, f"{mnt / 'run'}", "No space left on device", "run the same command again")
    rc, err = step("grown")
    assert rc == 0, err
    assert_same_as(keep / "run", ref)
    rc, err = step("readonly")
    assert_one_line_error(rc, err, f"{mnt / 'run' / '.lock'}", "Read-only file system")
    rc, err = step("writable")
    assert rc == 0, err


# --- helpers for the API-judge tests ------------------------------------------------------------
OA_ENV, OA_KEY = "TGRS_TEST_HARDEN_KEY", "sk-test-harden-5e1f9a0c7b3d"


def api_panel(tmp_path: Path, base_url: str, **judge: Any) -> Path:
    """final_answer (free), then one OpenAI judge on ``base_url``."""
    t = {"name": "gpt", "kind": "openai", "model": "gpt-judge-test", "base_url": base_url,
         "api_key_env": OA_ENV, "rubric": "The final answer must equal the reference.", "max_tokens": 64,
         "timeout_s": 5.0, "price_input_per_mtok": 2.0, "price_output_per_mtok": 8.0, "max_concurrency": 4,
         **judge}
    p = tmp_path / "api-panel.toml"
    p.write_text('policy = "unanimous"\n\n[[teacher]]\nname = "answer"\nkind = "final_answer"\ncost_rank = 0\n\n'
                 "[[teacher]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items()))
    return p


def paid_verdicts(out: Path) -> list[dict[str, Any]]:
    return [v for v in jsonl(out / "verdicts.jsonl") if v["teacher"] == "gpt"]


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    monkeypatch.setenv(OA_ENV, OA_KEY)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 4. fail fast, once, with the cause ----------------------------------------------------------
def test_a_refused_key_stops_the_run_at_once_naming_teacher_status_url_and_variable(
        tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]) -> None:
    from tgrs_agents.testing.standin import StandIn

    inp = write_synthetic(tmp_path / "in.jsonl", 120, seed=8)
    out = tmp_path / "run"
    with StandIn() as srv:
        panel = api_panel(tmp_path, srv.url_openai)
        srv.script.extend(["401"] * 10_000)
        rc, _, err = curate(inp, out, "--no-cache", "--max-in-flight", "16", panel=panel, capsys=capsys)
        line = assert_one_line_error(
            rc, err, f"teacher 'gpt': HTTP 401 from {srv.url_openai}: the API key in ${OA_ENV} was refused")
        assert OA_KEY not in err
        refused = srv.stats["requests"]
        assert 1 <= refused <= 4, refused  # at most the calls in flight when the first 401 came back
        s = json.loads((out / "summary.json").read_text())
        assert s["stopped"] == f"error: {line.removeprefix('tgrs: error: ')}" and s["pending"] > 0

        srv.script.clear()  # the key is fixed
        rc, s2, err = curate(inp, out, "--no-cache", panel=panel, capsys=capsys)
        assert rc == 0 and s2 is not None and s2["pending"] == 0 and s2["failed"] == 0, err
        good = sum(1 for v in paid_verdicts(out) if v["error"] is None)
        assert srv.stats["requests"] - refused == good  # each candidate paid once, after the fix


def test_an_endpoint_that_does_not_answer_trips_the_breaker_in_seconds(
        tmp_path: Path, key: None) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 200, seed=9)
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{closed_port()}/v1"
    panel = api_panel(tmp_path, url)
    p = subprocess.run([sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(panel),
                        "--out", str(out), "--quiet", "--no-cache"], capture_output=True, text=True, timeout=60)
    assert_one_line_error(p.returncode, p.stderr, "teacher 'gpt': 20 attempts in a row got no answer from "
                          f"{url}", "connection")
    s = json.loads((out / "summary.json").read_text())
    assert s["teachers"]["gpt"]["requests"] < 40  # not 5 attempts for each of the candidates
    assert s["accepted"] == 0 and s["pending"] > 50 and s["accepted"] + s["rejected"] + s["pending"] == 200


def test_a_damaged_ledger_stops_the_run_before_any_call_naming_the_file(
        tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]) -> None:
    from tgrs_agents.testing.standin import StandIn

    inp = write_synthetic(tmp_path / "in.jsonl", 20, seed=10)
    ledger = tmp_path / "ledger.sqlite"
    ledger.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    with StandIn() as srv:
        panel = api_panel(tmp_path, srv.url_openai)
        rc, _, err = curate(inp, tmp_path / "run", "--cache", str(ledger), panel=panel, capsys=capsys)
        assert_one_line_error(rc, err, f"tgrs: error: {ledger}: the verdict ledger cannot be used", "--no-cache")
        assert srv.stats["requests"] == 0 and not (tmp_path / "run").exists()
        rc, s, err = curate(inp, tmp_path / "run", "--no-cache", panel=panel, capsys=capsys)
        assert rc == 0 and s is not None and s["pending"] == 0, err


# --- 5. paid verdicts are never lost ------------------------------------------------------------
@contextlib.contextmanager
def failing_writes(name: str, after: int, on: Callable[[], None] = lambda: None) -> Iterator[None]:
    """``os.write`` to ``name`` fails with ENOSPC after ``after`` successful writes."""
    real_write = os.write
    count = Counter()

    def write(fd: int, data: Any) -> int:
        if fd_name(fd) == name:
            count[name] += 1
            if count[name] > after:
                on()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", write)
        yield


def test_calls_in_flight_at_an_internal_stop_are_drained_and_none_is_paid_twice(
        tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]) -> None:
    from tgrs_agents.testing.standin import FaultPlan, StandIn

    inp = write_synthetic(tmp_path / "in.jsonl", 160, seed=11)
    with StandIn(FaultPlan(latency_mean_s=0.15, latency_sigma=0.3)) as srv:
        panel = api_panel(tmp_path, srv.url_openai, max_concurrency=16)
        ref = tmp_path / "ref"
        assert curate(inp, ref, "--no-cache", panel=panel, capsys=capsys)[0] == 0
        paid_ref = srv.stats["ok"]
        out = tmp_path / "run"
        in_flight_at_stop: list[int] = []
        with failing_writes("accepted.jsonl", 1, on=lambda: in_flight_at_stop.append(srv.stats["requests"])):
            rc, _, err = curate(inp, out, "--no-cache", "--max-in-flight", "32", panel=panel, capsys=capsys)
        assert_one_line_error(rc, err, "accepted.jsonl: cannot write: No space left on device")
        paid_1 = srv.stats["ok"] - paid_ref
        assert in_flight_at_stop and paid_1 >= in_flight_at_stop[0] - paid_ref  # calls went on after it
        assert len([v for v in paid_verdicts(out) if v["error"] is None]) == paid_1  # all journaled
        assert curate(inp, out, "--no-cache", panel=panel, capsys=capsys)[0] == 0
        assert srv.stats["ok"] - paid_ref == paid_ref  # both sessions together paid exactly once each
    assert_same_as(out, ref)
    s, s_ref = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    assert s["cost_usd"] == pytest.approx(s_ref["cost_usd"], abs=1e-9)


def test_a_paid_verdict_the_journal_could_not_take_is_counted_once_from_the_ledger(
        tmp_path: Path, key: None, capsys: pytest.CaptureFixture[str]) -> None:
    from tgrs_agents.testing.standin import StandIn

    inp = write_synthetic(tmp_path / "in.jsonl", 60, seed=12)
    ledger = tmp_path / "ledger.sqlite"
    with StandIn() as srv:
        panel = api_panel(tmp_path, srv.url_openai)
        ref = tmp_path / "ref"
        assert curate(inp, ref, "--no-cache", panel=panel, capsys=capsys)[0] == 0
        paid_ref = srv.stats["ok"]
        out = tmp_path / "run"
        with failing_writes("verdicts.jsonl", 5):  # paid verdicts arrive, the journal is full
            rc, _, err = curate(inp, out, "--cache", str(ledger), panel=panel, capsys=capsys)
        assert_one_line_error(rc, err, "verdicts.jsonl: cannot write: No space left on device")
        lost = srv.stats["ok"] - paid_ref - len(paid_verdicts(out))
        assert lost >= 1  # paid, in the ledger, not in the journal
        rc, s, err = curate(inp, out, "--cache", str(ledger), panel=panel, capsys=capsys)
        assert rc == 0 and s is not None, err
        assert srv.stats["ok"] - paid_ref == paid_ref  # the lost ones came from the ledger: not paid twice
    assert_same_as(out, ref)
    s_ref = json.loads((ref / "summary.json").read_text())
    assert s["cost_usd"] == pytest.approx(s_ref["cost_usd"], abs=1e-9)  # ... and not free
    assert s["teachers"]["gpt"]["requests"] == s_ref["teachers"]["gpt"]["requests"]
    with sqlite3.connect(ledger) as db:  # nothing is owed any more
        assert db.execute("SELECT COUNT(*) FROM verdicts WHERE owed IS NOT NULL").fetchone()[0] == 0


@pytest.mark.slow
def test_after_kill_9_a_resume_pays_at_most_the_calls_in_flight_again_and_counts_every_cost_once(
        tmp_path: Path, key: None) -> None:
    """The README's promise: at most the requests in flight at the moment of a ``kill -9`` may be
    paid twice. Everything that arrived was journaled at once or is owed in the ledger, so the
    finished run's cost equals an uninterrupted run's to the last digit (before, verdicts in the
    commit buffer came back from the ledger as free, and the cost was under-reported)."""
    import random
    import signal
    import time

    from tgrs_agents.testing.standin import FaultPlan, StandIn

    inp = write_synthetic(tmp_path / "in.jsonl", 400, seed=13)
    ledger, ref, out = tmp_path / "ledger.sqlite", tmp_path / "ref", tmp_path / "run"
    env = {**os.environ, OA_ENV: OA_KEY}
    with StandIn(FaultPlan(latency_mean_s=0.04, latency_sigma=0.3)) as srv:
        panel = api_panel(tmp_path, srv.url_openai, max_concurrency=6)

        def cmd(d: Path, *extra: str) -> list[str]:
            return [sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(panel),
                    "--out", str(d), "--quiet", *extra]

        p = subprocess.run(cmd(ref, "--no-cache"), capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        paid_ref = srv.stats["ok"]
        rng, kills = random.Random(5), 0
        for _ in range(4):
            before = len(paid_verdicts(out))
            proc = subprocess.Popen(cmd(out, "--cache", str(ledger)), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env)
            deadline = time.monotonic() + 60
            while proc.poll() is None and len(paid_verdicts(out)) <= before and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.4))
            kills += proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert kills >= 3, "too few kills landed while the run was working"
        p = subprocess.run(cmd(out, "--cache", str(ledger)), capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        paid_twice = srv.stats["ok"] - 2 * paid_ref
    assert 0 <= paid_twice <= 6 * kills  # at most what was in flight (max_concurrency) at each kill
    assert_same_as(out, ref)
    s, s_ref = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    assert s["cost_usd"] == pytest.approx(s_ref["cost_usd"], abs=1e-9)
    assert s["teachers"]["gpt"]["requests"] == s_ref["teachers"]["gpt"]["requests"]
