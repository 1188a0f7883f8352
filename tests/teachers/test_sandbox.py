"""The sandbox that runs untrusted code: timeouts, fork bombs, memory, network, cleanup.

Processes started by a test mark themselves by writing a unique token to ``/proc/self/comm``
(which their children inherit), so the test can look for them from outside, in ``/proc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tgrs_agents.teachers import sandbox
from tgrs_agents.teachers.sandbox import SandboxLimits, SandboxResult, run_python


def run(source: str, **limits: float) -> SandboxResult:
    return asyncio.run(run_python(source, limits=SandboxLimits(**limits)))  # type: ignore[arg-type]


def token() -> str:
    return "tg" + uuid.uuid4().hex[:12]  # comm holds 15 characters


def mark(tok: str) -> str:
    """Source lines that give the sandboxed process (and its children) the name ``tok``."""
    return f"import os, sys, time\nopen('/proc/self/comm', 'w').write({tok!r})\n"


def pids_named(tok: str) -> list[int]:
    """Live processes called ``tok`` (zombies are dead, just not reaped yet by their parent)."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        comm, _, rest = stat.partition("(")[2].rpartition(")")
        if comm == tok and rest.split()[0] != "Z":
            found.append(int(name))
    return found


def pids_of_uid(uid: int) -> list[int]:
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        if int(uids.split()[1]) == uid:
            found.append(int(name))
    return found


ISOLATION = run("pass").isolation
HAS_PIDNS = "pidns" in ISOLATION
NPROC_ENFORCED = "uid" in ISOLATION or "userns" in ISOLATION  # root ignores RLIMIT_NPROC
needs_pidns = pytest.mark.skipif(not HAS_PIDNS, reason=f"no PID namespace here ({ISOLATION})")


def test_runs_a_script_and_captures_its_output() -> None:
    r = run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (r.returncode, r.timed_out, r.ok) == (3, False, False)
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert r.wall_s < 5
    assert run("print(6 * 7)").ok


@pytest.mark.skipif(os.geteuid() != 0, reason="root only")
def test_as_root_the_script_is_pid1_of_its_namespace_under_a_uid_of_its_own() -> None:
    r = run("import os\nprint(os.getpid(), os.getuid(), os.getgid(), os.getgroups())")
    assert r.isolation.startswith("pidns+netns+uid"), r.isolation
    pid, uid, gid, groups = r.stdout.split(" ", 3)
    assert pid == "1" and uid != "0" and gid == uid and groups.strip() == "[]"
    assert f"uid{uid}" in r.isolation


def test_an_infinite_loop_is_killed_at_the_timeout() -> None:
    start = time.monotonic()
    r = run("while True:\n    pass", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert r.timed_out and not r.ok and r.returncode is None
    assert 1.0 <= r.wall_s < 2.0
    assert elapsed < 3.0


def test_output_written_before_the_timeout_is_kept() -> None:
    r = run("print('started')\nwhile True:\n    pass", timeout_s=0.5)
    assert r.timed_out and r.stdout == "started\n"


@needs_pidns
@pytest.mark.skipif(not NPROC_ENFORCED, reason=f"RLIMIT_NPROC not enforced ({ISOLATION})")
def test_a_fork_bomb_is_contained_and_nothing_of_it_survives() -> None:
    tok = token()
    bomb = mark(tok) + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    seen: list[int] = []

    async def main() -> SandboxResult:
        task = asyncio.ensure_future(run_python(bomb, limits=SandboxLimits(timeout_s=2.0, max_processes=16)))
        while not task.done():
            seen.append(len(pids_named(tok)))
            await asyncio.sleep(0.05)
        return await task

    r = asyncio.run(main())
    assert r.timed_out and 2.0 <= r.wall_s < 4.0
    assert max(seen) > 1, "the bomb never forked: the test saw nothing"
    assert max(seen) <= 16, f"RLIMIT_NPROC did not hold: {max(seen)} processes"
    assert pids_named(tok) == []
    uid = next((int(p[3:]) for p in r.isolation.split("+") if p.startswith("uid")), None)
    if uid is not None and uid != 65534:
        assert pids_of_uid(uid) == []


@pytest.mark.skipif(not NPROC_ENFORCED, reason=f"RLIMIT_NPROC not enforced ({ISOLATION})")
def test_max_processes_caps_forks() -> None:
    src = (
        "import os, time\nkids = 0\nwhile kids < 100:\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    kids += 1\nprint(kids)\n"
    )
    r = run(src, max_processes=8, timeout_s=5.0)
    assert r.ok, r.stderr
    assert 1 <= int(r.stdout) < 8


def test_a_memory_hog_fails_without_harming_the_parent() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    r = run("x = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert not r.ok and "allocated" not in r.stdout
    assert "MemoryError" in r.stderr
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 1024**2))"
    r = run(grow, memory_mb=256, timeout_s=5.0)
    assert not r.ok and not r.timed_out and "MemoryError" in r.stderr
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    assert len(bytearray(300 * 1024**2)) == 300 * 1024**2  # the parent can still allocate


def test_no_network_not_even_the_hosts_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        src = (
            "import socket, sys\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
            "except OSError as e:\n    print('refused:', e)\n    sys.exit(3)\nprint('CONNECTED')\n"
        )
        r = run(src, timeout_s=5.0)
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert "CONNECTED" not in r.stdout and "refused" in r.stdout
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever arrived


@pytest.mark.skipif(not HAS_PIDNS and "uid" not in ISOLATION, reason=f"no way to find escapees ({ISOLATION})")
@pytest.mark.parametrize("main_exits", [True, False])
def test_a_setsid_grandchild_is_killed(main_exits: bool) -> None:
    tok = token()
    src = mark(tok) + (
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n"
        "time.sleep(0.3)\nprint('main done', flush=True)\n"
    )
    if not main_exits:
        src += "time.sleep(60)\n"
    r = run(src, timeout_s=1.5)
    assert r.stdout == "main done\n"
    assert r.ok is main_exits and r.timed_out is not main_exits
    assert pids_named(tok) == []


def test_the_working_dir_is_fresh_and_removed_afterwards() -> None:
    src = (
        "import json, os\nlisting = sorted(os.listdir('.'))\nopen('scratch.txt', 'w').write('x')\n"
        "print(json.dumps([os.getcwd(), listing, os.environ['HOME'], os.environ['TMPDIR']]))\n"
    )
    first, second = run(src), run(src)
    assert first.ok and second.ok, first.stderr
    cwd, listing, home, tmp = json.loads(first.stdout)
    assert listing == ["main.py"] and home == cwd == tmp
    assert Path(cwd).parent == Path(tempfile.gettempdir()) and Path(cwd).name.startswith("tgrs-sandbox-")
    assert json.loads(second.stdout)[0] != cwd
    assert not Path(cwd).exists()


def test_environment_secrets_are_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    r = run("import json, os\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(r.stdout)
    assert "OPENAI_API_KEY" not in env and "sk-test-secret" not in r.stdout
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG"} | {k for k in env if k.startswith("PYTHON")}


def test_cancelling_the_awaiting_task_kills_the_child() -> None:
    tok = token()
    src = mark(tok) + "if os.fork() == 0:\n    os.setsid()\ntime.sleep(60)\n"

    async def main() -> tuple[list[int], str]:
        task = asyncio.ensure_future(run_python(src, limits=SandboxLimits(timeout_s=30)))
        deadline = time.monotonic() + 10
        while len(pids := pids_named(tok)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        cwd = os.readlink(f"/proc/{min(pids)}/cwd")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids, cwd

    start = time.monotonic()
    pids, cwd = asyncio.run(main())
    assert len(pids) == 2 and time.monotonic() - start < 5
    assert pids_named(tok) == []
    assert Path(cwd).name.startswith("tgrs-sandbox-") and not Path(cwd).exists()


def test_output_is_cut_to_max_output_bytes_keeping_head_and_tail() -> None:
    r = run("print('HEAD' + 'x' * 1_000_000 + 'TAIL')", max_output_bytes=1000)
    assert r.ok
    assert r.stdout.startswith("HEAD") and r.stdout.rstrip().endswith("TAIL")
    assert "bytes cut" in r.stdout and len(r.stdout) < 1100


def test_last_resort_mode_refuses_ip_sockets_but_not_unix_ones() -> None:
    src = (
        "import socket\na, b = socket.socketpair()\na.send(b'hi')\nprint(b.recv(2))\n"
        "socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
    )
    mode = ("rlimits", "nosocket")
    r = asyncio.run(sandbox._run(mode, src, SandboxLimits(), sandbox.sys.executable))
    assert r.isolation == "rlimits+nosocket"
    assert r.stdout == "b'hi'\n" and "network access is disabled in the sandbox" in r.stderr




def mount_namespaces_work() -> bool:
    """Asked of the host, not of the sandbox, so a sandbox that fails to use them fails the tests."""
    import shutil
    import subprocess

    argv = ["unshare", "--mount", "true"]
    if os.geteuid() != 0:
        argv[1:1] = ["--user", "--map-root-user"]
    return shutil.which("unshare") is not None and subprocess.run(argv, capture_output=True).returncode == 0


HAS_MNTNS = mount_namespaces_work()
needs_mntns = pytest.mark.skipif(not HAS_MNTNS, reason="mount namespaces are not available here")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="root only (chown to the sandbox's uids)")
SANDBOX_UID = sandbox._UID_RANGE.start + 4242


@needs_mntns
def test_the_hosts_files_are_out_of_sight(tmp_path: Path) -> None:
    """Only the system library dirs and the interpreter's prefixes are there, read-only."""
    secret = tmp_path / "input.jsonl"
    secret.write_text('{"tests": "assert f() == 42"}\n')
    run_out = tmp_path / "runs" / "r1" / "accepted.jsonl"
    run_out.parent.mkdir(parents=True)
    run_out.write_text("{}\n")
    repo_file = Path(__file__).resolve()
    src = (
        "import json, os, sys\n"
        f"paths = {[str(secret), str(run_out), str(repo_file), str(repo_file.parents[2] / 'pyproject.toml')]!r}\n"
        "writable = []\n"
        "for d in ('/usr', sys.prefix, sys.base_prefix, '/', '/etc'):\n"
        "    try:\n        open(os.path.join(d, 'tgrs-probe'), 'w').close()\n        writable.append(d)\n"
        "    except OSError:\n        pass\n"
        "print(json.dumps({'seen': [p for p in paths if os.path.exists(p)], 'root': sorted(os.listdir('/')),\n"
        "    'etc': sorted(os.listdir('/etc')), 'writable': writable, 'prefix': sys.prefix}))\n"
    )
    r = run(src)
    assert r.ok, r.stderr
    got = json.loads(r.stdout)
    assert got["seen"] == [] and got["writable"] == []
    assert set(got["etc"]) <= {"ld.so.cache", "passwd", "group"}
    prefixes = {Path(p).resolve().parts[1] for p in (sys.prefix, sys.base_prefix, got["prefix"])}
    allowed = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp", "var"}
    assert set(got["root"]) <= allowed | prefixes, got["root"]


@pytest.mark.parametrize("mntns", [True, False])
def test_files_left_in_the_temp_dirs_do_not_outlive_the_run(mntns: bool) -> None:
    if mntns and not HAS_MNTNS:
        pytest.skip("mount namespaces are not available here")
    if not mntns and "uid" not in ISOLATION:
        pytest.skip(f"no uid of the run's own here ({ISOLATION})")
    tok = token()
    dirs = [d for d in ("/tmp", "/var/tmp", "/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]
    src = "import os\n" + "".join(
        f"open({f'{d}/{tok}-{i}'!r}, 'w').write('left')\nos.mkdir({f'{d}/{tok}-dir{i}'!r})\n"
        for i, d in enumerate(dirs)
    )
    if mntns:
        r = run(src)
    else:  # today's isolation, where mount namespaces are not available: the files are swept
        r = asyncio.run(sandbox._run(("pidns", "netns", "uid", "rlimits"), src, SandboxLimits(), sys.executable))
    assert r.ok, r.stderr
    assert ("mntns" in r.isolation) is mntns
    left = [p for d in dirs for p in Path(d).glob(f"{tok}*")]
    assert left == []


def test_isolation_level_names_the_layers_in_force() -> None:
    r = run("pass")
    level = sandbox.isolation_level()
    assert level is not None and level == "+".join("uid" if x.startswith("uid") else x for x in r.isolation.split("+"))
    assert sandbox.isolation_level("/no/such/python") is None  # not probed


@pytest.fixture
def no_mount_namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host where mount namespaces fail: the boot's mount step raises, the probe moves on."""
    broken = sandbox._BOOT.replace("def build_root(spec):\n", "def build_root(spec):\n    raise OSError('EPERM')\n", 1)
    assert broken != sandbox._BOOT
    monkeypatch.setattr(sandbox, "_BOOT", broken)
    monkeypatch.delitem(sandbox._chosen, sys.executable, raising=False)
    sandbox._boot_arg.cache_clear()
    yield
    sandbox._boot_arg.cache_clear()


@needs_mntns
def test_without_mount_namespaces_the_probe_falls_back_and_says_so(
    no_mount_namespace: None, caplog: pytest.LogCaptureFixture
) -> None:
    r = run("print('ran')")
    assert r.ok and r.stdout == "ran\n"
    assert "mntns" not in r.isolation and "pidns" in r.isolation
    assert "mntns" not in (sandbox.isolation_level() or "mntns")
    assert "strongest mode unavailable" in caplog.text


def test_extra_files_args_and_fds_reach_the_script() -> None:
    r_fd, w_fd = os.pipe()
    os.write(w_fd, b"through a pipe")
    os.close(w_fd)
    try:
        src = "import os, sys\nprint(open('data.txt').read(), sys.argv[1:], os.read(int(sys.argv[1]), 100).decode())\n"
        r = asyncio.run(run_python(src, files={"data.txt": "a file"}, args=[str(r_fd), "x"], pass_fds=[r_fd]))
    finally:
        os.close(r_fd)
    assert r.ok, r.stderr
    assert r.stdout == f"a file ['{r_fd}', 'x'] through a pipe\n"


@pytest.mark.parametrize("same_interpreter", [True, False])
def test_the_script_runs_compiled_here_or_from_source_elsewhere(same_interpreter: bool) -> None:
    """This interpreter gets main.py compiled by the parent; another one compiles it itself."""
    python = sys.executable if same_interpreter else os.path.realpath(sys.executable)
    assert (python == sys.executable) is same_interpreter
    limits = SandboxLimits()
    ok = asyncio.run(run_python("import sys\nprint(6 * 7, sys.argv[0], __name__)", limits=limits, python=python))
    assert ok.ok and ok.stdout == "42 main.py __main__\n", ok.stderr
    bad = asyncio.run(run_python("def f(:\n", limits=limits, python=python))
    assert bad.returncode == 1 and "SyntaxError" in bad.stderr
    crash = asyncio.run(run_python("x = 1\nraise ValueError('boom')\n", limits=limits, python=python))
    assert 'File "main.py", line 2' in crash.stderr and "ValueError: boom" in crash.stderr


def _stale_dir(name: str, uid: int | None, age_s: float) -> Path:
    p = Path(tempfile.gettempdir()) / name
    p.mkdir()
    (p / "main.py").write_text("x")
    if uid is not None:
        os.chown(p, uid, uid)
    os.utime(p, (time.time() - age_s,) * 2)
    return p


@needs_root
def test_sweep_stale_removes_what_killed_runs_left_and_nothing_else(tmp_path: Path) -> None:
    import subprocess

    tok = token()
    dead = _stale_dir(f"tgrs-sandbox-{tok}a", SANDBOX_UID, 3600)
    fresh = _stale_dir(f"tgrs-sandbox-{tok}b", SANDBOX_UID + 1, 5)
    not_ours = _stale_dir(f"tgrs-sandbox-{tok}c", None, 3600)  # root's
    live = _stale_dir(f"tgrs-sandbox-{tok}d", SANDBOX_UID + 2, 3600)
    target = tmp_path / "keep"
    target.mkdir()
    (target / "file").write_text("keep me")
    link = Path(tempfile.gettempdir()) / f"tgrs-sandbox-{tok}e"
    link.symlink_to(target)
    os.lchown(link, SANDBOX_UID + 3, SANDBOX_UID + 3)
    os.utime(link, (time.time() - 3600,) * 2, follow_symlinks=False)
    sleeper = subprocess.Popen(["sleep", "30"], user=SANDBOX_UID + 2, group=SANDBOX_UID + 2)
    try:
        removed = sandbox.sweep_stale(older_than_s=60)
        assert str(dead) in removed and str(link) in removed
        assert not dead.exists() and not link.is_symlink()
        assert (target / "file").read_text() == "keep me"  # the link was removed, not followed
        assert fresh.exists() and not_ours.exists() and live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        for p in (fresh, not_ours, live):
            subprocess.run(["rm", "-rf", str(p)], check=False)
