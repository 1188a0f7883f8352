"""The first stage inside the sandbox: build the private filesystem, drop root, run ``main.py``.

:mod:`tgrs_agents.teachers.sandbox` starts the interpreter under test as ``python -c <this
file's source> key=value... -- args...``, as PID 1 of fresh PID, network and mount namespaces.
This code runs before anything untrusted and uses the standard library only (it is never
imported by the package), and no module it does not need: every millisecond here is paid per
candidate. Its steps, each one optional as the spec says:

0. ``rlimits``: ``RLIMIT_CORE`` 0, and ``RLIMIT_AS``, ``RLIMIT_FSIZE`` and ``RLIMIT_NPROC`` as given.

1. ``mntns``: a tmpfs (``size`` MiB) becomes the new root. Into it go read-only binds of ``/usr``
   and the other system library dirs (the host's top-level symlinks such as ``/lib -> usr/lib``
   are copied), of this interpreter's prefixes (a venv and its base), of ``/etc/ld.so.cache``, the
   character devices ``null zero full random urandom``, a fresh ``/proc`` for the new PID
   namespace, writable ``/tmp``, ``/var/tmp`` and ``/dev/shm``, and the working dir at the same
   path as on the host with the files the parent left there (copied, the host dir is not
   mounted). ``pivot_root`` and a detach of the old root leave nothing else of the host
   reachable: no input files, run directories, home or project tree.
2. ``uid``: ``setgroups([])``, then gid and uid of the run (real, effective, saved), then
   ``PR_SET_NO_NEW_PRIVS`` (no setuid binary gives root back), ``PR_SET_PDEATHSIG`` (a uid change
   clears it) and ``PR_SET_DUMPABLE`` (a uid change clears it too, which would leave the files of
   ``/proc/self`` to root; an exec would have set it again).
3. ``nosocket`` (only where there is no network namespace): an audit hook that refuses IP
   connect, bind and DNS. It stops accidental network use, not a determined script.
4. ``main.py`` of the working dir runs as ``__main__`` with the extra ``args`` in ``sys.argv``;
   where the parent runs the same interpreter, its code object comes compiled (marshal) on
   ``code_fd``, as this file does in ``-c``: compiling costs milliseconds per sandbox.

A failure before step 4 exits 125 with one line on stderr; the parent's probe then tries the next
weaker mode.
"""

import os
import stat  # loaded at start-up already, as are os and sys
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
_libc = []  # type: list  # (libc, the ctypes module), once loaded


def libc():
    """libc through ctypes, imported only by the modes that need it."""
    if not _libc:
        import ctypes

        _libc.append((ctypes.CDLL(None, use_errno=True), ctypes))
    return _libc[0][0]


def check(ret, what):
    if ret != 0:
        err = _libc[0][1].get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src, target, fstype, flags, data=None):
    enc = [None if s is None else s.encode() for s in (src, target, fstype, data)]
    check(libc().mount(enc[0], enc[1], enc[2], _libc[0][1].c_ulong(flags), enc[3]), f"mount {target}")


def bind(src, target, readonly):
    """Bind ``src`` at ``target`` (created: a dir or an empty file); read-only if asked, keeping
    the flags the source mount has (a user namespace may not clear them)."""
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(src, target, None, MS_BIND | MS_REC)
    if readonly:
        st = os.statvfs(src).f_flag  # ST_* bits equal MS_* bits for these
        kept = st & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept)


def interpreter_dirs():
    """The real paths this interpreter loads from, without the ones inside another."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    dirs |= {os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(sys.executable))}
    dirs |= {os.path.realpath(d) for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)}
    dirs.discard("/")
    return sorted(d for d in dirs if not any(d.startswith(o + "/") for o in dirs))


def build_root(spec):
    os.umask(0o022)
    work = spec["workdir"]
    files = {}
    for name in os.listdir(work):  # the parent's files, read before the tmpfs hides them
        fd = os.open(os.path.join(work, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb") as f:  # regular files only: this runs as root
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{name} in the working dir is not a regular file")
            files[name] = f.read()
    root = work  # the tmpfs is mounted over the host's working dir and becomes "/"
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['tmpfs_mb']}m,nr_inodes=16384,mode=755")
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), root + d)
    for d in interpreter_dirs():
        bind(d, root + d, readonly=True)
    if os.path.exists("/etc/ld.so.cache"):
        bind("/etc/ld.so.cache", root + "/etc/ld.so.cache", readonly=True)
    os.makedirs(root + "/etc", exist_ok=True)
    uid = spec.get("uid") or 0
    write(root + "/etc/passwd", f"root:x:0:0::/root:/bin/false\nsandbox:x:{uid}:{uid}::{work}:/bin/false\n")
    write(root + "/etc/group", f"root:x:0:\nsandbox:x:{uid}:\n")
    for dev in DEVICES:
        bind("/dev/" + dev, root + "/dev/" + dev, readonly=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root + "/dev/" + name)
    os.makedirs(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        os.makedirs(root + d, exist_ok=True)
        os.chmod(root + d, 0o1777)
    os.makedirs(root + work, mode=0o700, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(root + work, name), "wb") as f:
            f.write(data)
    if spec.get("uid") is not None:
        os.chown(root + work, uid, uid)
    os.chdir(root)  # pivot_root(".", "."): the old root is stacked under the new one, then detached
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(f"pivot_root: no syscall number known for {os.uname().machine}")
    check(libc().syscall(nr, b".", b"."), "pivot_root")
    check(libc().umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def drop_root(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    check(libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    check(libc().prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "pdeathsig")
    check(libc().prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")  # as after an exec: /proc/self is its own


def no_net(event, args):
    if event.startswith(("socket.geth", "socket.getaddrinfo")) or (event in (
            "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg") and type(args[1]) is tuple):
        raise PermissionError(f"network access is disabled in the sandbox ({event})")


def set_limits(spec):
    """The rlimits, first of all (``resource``: a small extension module, well under a millisecond). As root
    RLIMIT_NPROC has no effect until the uid is dropped; in a user namespace prlimit set it."""
    import resource

    caps = [(resource.RLIMIT_CORE, 0)]
    if spec.get("as_mb") is not None:
        caps.append((resource.RLIMIT_AS, spec["as_mb"] << 20))
    if spec.get("fsize") is not None:
        caps.append((resource.RLIMIT_FSIZE, spec["fsize"]))
    if spec.get("nproc") is not None:
        caps.append((resource.RLIMIT_NPROC, spec["nproc"]))
    for res, value in caps:
        resource.setrlimit(res, (value, value))


def boot(spec):
    try:
        set_limits(spec)
        if spec.get("mntns"):
            build_root(spec)
        os.chdir(spec["workdir"])
        if spec.get("uid") is not None:
            drop_root(spec["uid"])
    except (OSError, ValueError) as e:  # ValueError: a limit above the hard one
        os.write(2, f"tgrs sandbox: boot failed: {e}\n".encode())
        os._exit(125)
    if spec.get("nosocket"):
        sys.addaudithook(no_net)
    main = type(sys)("__main__")  # a fresh __main__, as ``python main.py`` would give
    main.__file__ = os.path.join(spec["workdir"], "main.py")
    sys.modules["__main__"] = main
    sys.argv[:] = ["main.py", *spec.get("args", ())]
    if sys.path and sys.path[0] == "":  # -c's entry for the cwd: the script's dir, as for ``python main.py``
        sys.path[0] = spec["workdir"]
    else:
        sys.path.insert(0, spec["workdir"])
    if spec.get("code_fd") is not None:  # main.py compiled by the parent (same interpreter)
        import marshal

        chunks = []
        while True:
            chunk = os.read(spec["code_fd"], 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(spec["code_fd"])
        code = marshal.loads(b"".join(chunks))
    else:
        with open("main.py", "rb") as f:
            code = compile(f.read(), "main.py", "exec")
    exec(code, main.__dict__)


def parse(argv):
    """``key=value`` items up to ``--``, then the script's args (no json: it costs an import)."""
    split = argv.index("--")
    spec = dict(item.partition("=")[::2] for item in argv[:split])
    spec = {k: v if k == "workdir" else None if v == "" else int(v) for k, v in spec.items()}
    spec["args"] = argv[split + 1 :]
    return spec


if __name__ == "__main__":
    boot(parse(sys.argv[1:]))
