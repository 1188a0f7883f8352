"""The ``code_tests`` harness: ``main.py`` of the sandbox. It imports the candidate, runs the tests.

Started (after the sandbox's boot has dropped root) as ``main.py TESTS_FD NONCE_FD REPORT_FD``
next to ``solution.py``, the candidate's code. Never imported by the package: its source is
written into the sandbox; standard library only, no syntax newer than Python 3.8, and no import
it can do without (each costs every candidate milliseconds).

1. Read a header line and the tests from ``TESTS_FD``, an unlinked in-memory file, and close it:
   the tests are in no file the candidate can open. Compile them; where the header asks, first
   drop top-level ``unittest.main()`` calls (the harness runs the TestCase classes itself) and,
   with ``strict=1``, rewrite ``assert a == b`` and ``assert a != b`` into type-strict
   comparisons (:func:`make_strict_eq`). With ``compiled=N`` the parent (the same interpreter) did
   this already with :func:`rewritten`: the first N bytes are the marshalled code, then the source.
2. Import the modules of the header's ``preload`` (what the tests import, and the candidate at
   its top level), then take a snapshot of them, of ``builtins``, ``math``, ``cmath``,
   ``operator`` and their entries in ``sys.modules``: what each function, class or module name
   is bound to (every name, in those four), a function's code and defaults, and every
   attribute of unittest's classes.
3. Import ``solution.py`` as the module ``solution``. Then run the tests in a copy of its
   namespace with a pristine copy of the builtins, then the ``unittest.TestCase`` classes the
   tests define, judged from the result object's lists, not its methods.
4. After the import and after the tests, compare with the snapshot: a candidate that patched a
   library the tests rely on (``unittest.TestCase.assertEqual``, ``math.isclose``, ``builtins``)
   fails, naming what it changed.
5. Only then read the nonce from ``NONCE_FD`` (a pipe), write it to ``REPORT_FD`` and ``_exit(0)``.
   The parent counts a pass only for exit status 0 *and* that exact report, so any early exit
   (``sys.exit(0)`` anywhere, ``os._exit(0)``, an ``atexit`` hook, a signal) fails. Every other
   ending exits 1 with the reason on stderr.

What a determined candidate can still do: it runs in this process, so it can read and write
anything the harness can. Code written against this harness can read the nonce from its pipe
and write the report itself, find the tests' code objects (or their expected values, from its
caller's frame) in memory, patch the harness's own functions, or undo its patches before the
check. The snapshot catches patched library code, not a patched interpreter (ctypes). What the
harness does guarantee is that none of this happens by accident or by a generic trick (an exit,
a patched assert, a file read); such code is visible in the trajectory. ``strict_types`` covers
the ``==`` and ``!=`` of assert statements and unittest's ``assertEqual`` family only: tests that
want type safety elsewhere should check types themselves.
"""

import os
import sys

_write, _read, _close, _exit, _getpid = os.write, os.read, os.close, os._exit, os.getpid
_stdout, _stderr = sys.stdout, sys.stderr

import builtins  # noqa: E402
import cmath  # noqa: E402, F401  (snapshotted: tests use them through the candidate's imports)
import math  # noqa: E402, F401
import operator  # noqa: E402, F401

MODULE = "solution"
__unittest = True  # unittest leaves this module's frames out of its tracebacks
ALWAYS = ("builtins", "math", "cmath", "operator")


def make_strict_eq(type=type, len=len, zip=zip, all=all, any=any, issubclass=issubclass, list=list, tuple=tuple,
                   dict=dict, set=set, frozenset=frozenset, str=str, bytes=bytes, bool=bool, int=int, float=float,
                   complex=complex):
    """``strict_eq(a, b)``: numbers (builtin ones, or the builtin value inside a subclass such as
    numpy's float64) compare by value; anything else only equals a value of its very type, and
    lists, tuples, dicts and sets compare element by element the same way. So an object whose
    ``__eq__`` always answers True equals nothing but its own type, and an ``int`` subclass that
    lies compares by its int value. Other types use their own ``__eq__``. (The builtins are bound
    now: patching ``builtins`` later does not reach this function.)"""
    to_number = ((bool, bool), (int, int.__int__), (float, float.__float__), (complex, complex.__complex__))
    atoms = (str, bytes, bool, int, float, complex, type(None))

    def number(x):  # type(x), unlike isinstance, cannot be faked with a __class__ property
        t = type(x)
        for base, value in to_number:
            if t is base or issubclass(t, base):
                return True, value(x)
        return False, None

    def plain(x):  # hashes and compares like a builtin: safe inside a set or as a dict key
        t = type(x)
        return t in atoms or (t in (tuple, frozenset) and all(plain(y) for y in x))

    def eq(a, b):
        if a is b:
            return True
        (na, va), (nb, vb) = number(a), number(b)
        if na or nb:
            return na and nb and va == vb
        ta = type(a)
        if ta is not type(b):
            return False
        if ta in (list, tuple):
            return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
        if ta is dict:
            if len(a) != len(b):
                return False
            if all(plain(k) for k in a) and all(plain(k) for k in b):
                return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)
            return all(any(eq(ka, kb) and eq(va, vb) for kb, vb in b.items()) for ka, va in a.items())
        if ta in (set, frozenset):
            if len(a) != len(b):
                return False
            if all(plain(x) for x in a) and all(plain(x) for x in b):
                return a == b
            return all(any(eq(x, y) for y in b) for x in a)
        return a == b  # one type, its own __eq__

    return eq


strict_eq = make_strict_eq()


def rewritten(source, strict):
    """The tests compiled without top-level ``unittest.main(...)`` calls (also under ``if __name__
    == "__main__":``) and, with ``strict``, with ``assert a == b`` as ``assert _tgrs_eq(a, b)``
    (``!=``: ``not``). Line numbers stay. ``ast`` is imported only here: it costs milliseconds."""
    import ast

    def prune(body):
        out = []
        for stmt in body:
            call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
            f = call.func if call else None
            if isinstance(f, ast.Attribute) and f.attr == "main" and getattr(f.value, "id", "") == "unittest":
                continue
            if isinstance(stmt, ast.If) and "__main__" in ast.dump(stmt.test):
                stmt.body = prune(stmt.body) or [ast.copy_location(ast.Pass(), stmt)]
            out.append(stmt)
        return out

    class Strict(ast.NodeTransformer):
        def visit_Assert(self, node):
            self.generic_visit(node)
            t = node.test
            if isinstance(t, ast.Compare) and len(t.ops) == 1 and type(t.ops[0]) in (ast.Eq, ast.NotEq):
                call = ast.Call(func=ast.Name(id="_tgrs_eq", ctx=ast.Load()), args=[t.left, t.comparators[0]],
                                keywords=[])
                node.test = call if type(t.ops[0]) is ast.Eq else ast.UnaryOp(op=ast.Not(), operand=call)
                ast.copy_location(node.test, t)
                ast.fix_missing_locations(node)
            return node

    tree = ast.parse(source, "tests.py")
    tree.body = prune(tree.body)
    if strict:
        tree = Strict().visit(tree)
    return compile(tree, "tests.py", "exec")


def snapshot(names):
    """What to compare later: (label, namespace, {name: describe(value)}, closed to additions)."""
    shots = [("sys.modules", sys.modules, {n: (sys.modules[n],) for n in names if n in sys.modules}, False)]
    for name in names:
        mod = sys.modules.get(name)
        if mod is None or name == "sys":
            continue
        ns = vars(mod)
        # Python modules set data globals lazily (tempfile.tempdir): there, functions, classes and
        # modules count; in the builtin ones (ALWAYS), their constants too (math.pi)
        every = name in ALWAYS
        kept = {k: describe(v) for k, v in ns.items() if not k.startswith("__") and (every or behaves(v))}
        shots.append((name, ns, kept, False))
        if name == "unittest" or name.startswith("unittest."):  # their classes: every method
            for k, v in list(ns.items()):
                if isinstance(v, type) and v.__module__ == name:
                    shots.append((f"{name}.{k}", vars(v), {a: describe(b) for a, b in vars(v).items()}, True))
    return shots


def behaves(v, callable=callable, module=type(sys)):
    return callable(v) or type(v) is module


def describe(v, type=type, function=type(snapshot), wrappers=(staticmethod, classmethod)):
    """The object, and for a Python function (or one wrapped as a static or class method) the
    parts a patch in place would swap: code and defaults."""
    f = v.__func__ if type(v) in wrappers else v
    if type(f) is function:
        return (v, f.__code__, f.__defaults__, f.__kwdefaults__)
    return (v,)


def tampered(shots, describe=describe, len=len, zip=zip, any=any, repr=repr):
    """The names whose binding (or function code) changed since the snapshot. Builtins are bound
    now, so a patched ``builtins`` cannot blind this check."""
    out = []
    for label, ns, before, closed in shots:
        for k, old in before.items():
            now = ns.get(k, ns)
            if now is ns or len(old) != len(describe(now)) or any(a is not b for a, b in zip(old, describe(now))):
                out.append(label + "." + k if label != "sys.modules" else "sys.modules[" + repr(k) + "]")
        if closed:
            out += [label + "." + k + " (added)" for k in ns if k not in before]
    return out


def module_names(requested):
    """The requested modules and their loaded submodules (so ``np.testing`` comes with ``numpy``)."""
    tops = {n.split(".")[0] for n in requested}
    return sorted(n for n in sys.modules if n.split(".")[0] in tops)


def strict_unittest(case):
    """Type-strict ``assertEqual`` and family on ``unittest.TestCase`` (before the snapshot)."""
    TestCase = case.TestCase
    for name in ("assertEqual", "assertListEqual", "assertTupleEqual", "assertDictEqual", "assertSetEqual",
                 "assertSequenceEqual", "assertNotEqual"):
        orig = getattr(TestCase, name)

        def wrapper(self, first, second, *rest, _orig=orig, _negate=name == "assertNotEqual", **kw):
            _orig(self, first, second, *rest, **kw)  # its own checks and messages first
            if strict_eq(first, second) is _negate:
                raise self.failureException(f"{first!r} {'==' if _negate else '!='} {second!r} "
                                            f"(strict_types: {type(first).__name__}, {type(second).__name__})")

        wrapper.__name__ = name
        setattr(TestCase, name, wrapper)


def run_testcases(ns, candidate_ns, case, loader_cls, result_cls, suite_cls):
    """Run the TestCase classes the tests define; the failures, or [] when every test passed."""
    classes = [v for k, v in sorted(ns.items(), key=lambda kv: kv[0])
               if candidate_ns.get(k) is not v and isinstance(v, type) and issubclass(v, case.TestCase)
               and not v.__module__.startswith("unittest")]
    if not classes:
        return []
    tests = [t for c in classes for t in loader_cls().loadTestsFromTestCase(c)]
    marked = {t.id() for t in tests if getattr(type(t), "__unittest_skip__", False)
              or getattr(getattr(t, t._testMethodName, None), "__unittest_skip__", False)}
    result = result_cls()
    suite_cls(tests).run(result)  # a suite runs setUpClass and tearDownClass
    problems = [f"{kind}: {t.id()}\n{text}" for kind, items in (("FAIL", result.failures), ("ERROR", result.errors))
                for t, text in items]
    problems += [f"UNEXPECTED SUCCESS: {t.id()}" for t in result.unexpectedSuccesses]
    problems += [f"SKIPPED from inside the test: {t.id()} ({why})" for t, why in result.skipped if t.id() not in marked]
    if result.testsRun != len(tests):
        problems.append(f"{result.testsRun} of {len(tests)} tests ran")
    return problems


def fail(msg, exc=None, tests=b""):
    if exc is not None:
        import linecache
        import traceback

        text = tests.decode("utf-8", "replace")  # so the traceback shows the failing line
        linecache.cache["tests.py"] = (len(text), None, text.splitlines(True), "tests.py")
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(("main.py", "<frozen")):
            tb = tb.tb_next  # the harness's and importlib's frames
        msg = "".join(traceback.format_exception(type(exc), exc, tb)) + msg
    flush()
    _write(2, msg.encode("utf-8", "replace") + b"\n")
    _exit(1)


def flush():
    for stream in (_stdout, _stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not keep the verdict back
            pass


def read_all(fd):
    chunks = []
    while True:
        chunk = _read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def early_exit(e, when):
    return f"{type(e).__name__}({e}) {when}: exiting before the tests finish fails"


def main(argv):
    tests_fd, nonce_fd, report_fd = (int(a) for a in argv[:3])
    pid = _getpid()
    for fd in (nonce_fd, report_fd):
        os.set_inheritable(fd, False)
    header, _, source = read_all(tests_fd).partition(b"\n")
    _close(tests_fd)
    options = dict(item.partition("=")[::2] for item in header.decode().split())
    strict = options.get("strict") == "1"
    compiled = int(options.get("compiled") or 0)
    try:
        if compiled:  # compiled by the parent (same interpreter) with rewritten(): no ast here
            import marshal

            tests, source = marshal.loads(source[:compiled]), source[compiled:]
        elif strict or options.get("rewrite") == "1":
            tests = rewritten(source, strict)
        else:
            tests = compile(source, "tests.py", "exec")
    except SyntaxError as e:
        fail("the record's tests do not compile", e, source)
    wanted = {name for name in options.get("preload", "").split(",") if name and name != MODULE}
    for name in sorted(wanted):  # in sys.modules before the candidate can touch them
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - the tests or the code will meet the error themselves
            pass
    if "linecache" in sys.modules:  # unittest formats its failures as they come: show the tests' lines
        text = source.decode("utf-8", "replace")
        sys.modules["linecache"].cache["tests.py"] = (len(text), None, text.splitlines(True), "tests.py")
    case = sys.modules.get("unittest.case")
    if case is not None:
        import unittest.loader
        import unittest.result
        import unittest.suite

        classes = (unittest.loader.TestLoader, unittest.result.TestResult, unittest.suite.TestSuite)
        if strict:
            strict_unittest(case)
    pristine = dict(vars(builtins))
    shots = snapshot(module_names(wanted | set(ALWAYS)))

    try:
        __import__(MODULE)  # sys.path[0] is the working dir; importlib.util would cost 4 ms
        module = sys.modules[MODULE]
    except (SystemExit, KeyboardInterrupt) as e:
        fail(early_exit(e, "while importing the code"))
    except BaseException as e:  # noqa: BLE001
        fail("", e, source)
    changed = tampered(shots)
    if changed:
        fail("the code changed what the tests rely on: " + ", ".join(changed[:8]))

    ns = dict(vars(module))
    ns.update(__name__="__main__", __file__="tests.py", __builtins__=dict(pristine), _tgrs_eq=strict_eq)
    ns.update(__spec__=None, __loader__=None, __cached__=None)
    try:
        exec(tests, ns)
        problems = run_testcases(ns, vars(module), case, *classes) if case is not None else []
    except (SystemExit, KeyboardInterrupt) as e:
        fail(early_exit(e, "during the tests"))
    except BaseException as e:  # noqa: BLE001
        fail("", e, source)
    if problems:
        fail("\n".join(problems))
    changed = tampered(shots)
    if changed:
        fail("the code changed what the tests rely on: " + ", ".join(changed[:8]))
    flush()
    if _getpid() != pid:  # a fork of the candidate's that ran on to here: only the harness reports
        _exit(0)
    _write(report_fd, read_all(nonce_fd))
    _exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
