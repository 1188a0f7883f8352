"""The end-of-run report's imports happen in a background thread while the run waits on its
provider, and ``python -m tgrs_agents`` skips the interpreter's final walk over every object."""

import subprocess
import sys

WARM = """
import sys
from tgrs_agents.report.warm import warm_up
assert "matplotlib" not in sys.modules and "numpy" not in sys.modules  # importing it costs nothing
t = warm_up(0.0)
assert t.daemon
t.join(60)
assert "matplotlib.figure" in sys.modules and "tgrs_agents.report.html" in sys.modules
assert "matplotlib.backends.backend_agg" in sys.modules  # the first figure was drawn
print("ok")
"""


def test_warm_up_imports_the_report_off_the_main_thread():
    done = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


MAIN = """
import gc, runpy, sys
sys.argv = ["tgrs", "--help"]
try:
    runpy.run_module("tgrs_agents", run_name="__main__")
except SystemExit as e:
    print(e.code, gc.get_freeze_count() > 0)
"""


def test_the_module_entry_point_freezes_the_heap_before_exit():
    done = subprocess.run([sys.executable, "-c", MAIN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 True"


def test_finish_skips_a_warm_up_that_has_not_begun_and_leaves_no_thread_behind() -> None:
    import time

    from tgrs_agents.report.warm import warm_up

    t0 = time.monotonic()
    t = warm_up(30.0)
    t.finish()  # the CLI calls this before exiting: a thread mid-import at shutdown aborts the process
    assert not t.is_alive() and time.monotonic() - t0 < 5
