"""Get the end-of-run report ready while the run is still waiting on its provider.

A run bound by a request quota leaves this process idle most of the time, and the report it writes
at the end starts with about a second of imports (numpy, matplotlib, the report's own modules) and
matplotlib's first figure (fonts, caches) before any of the run's data is read. :func:`warm_up`
does that work in a daemon thread started with the run, so the user waits only for the rendering.
It is best effort: any failure is swallowed (the report imports what it needs itself, and says
why when it cannot), and this module imports nothing heavy.
"""

from __future__ import annotations

import threading


class WarmUp(threading.Thread):
    """The warm-up thread. :meth:`finish` must be called before the process exits: a thread still
    importing C extensions (numpy, matplotlib) while the interpreter shuts down aborts the process
    (``terminate called without an active exception``, exit -6) after the run has done its work."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(name="tgrs-report-warm-up", daemon=True)
        self.delay_s = delay_s
        self._cancel = threading.Event()

    def run(self) -> None:
        if self._cancel.wait(self.delay_s):  # past the run's first second, which the limiter paces
            return  # the run ended first: nothing to warm
        try:
            from . import html  # noqa: F401 - numpy, the report's modules
            from .plots import _fig, _png

            fig, ax = _fig("warm-up")  # matplotlib, its Agg backend and fonts
            ax.plot([0, 1], [0, 1], label="x")
            ax.legend()
            _png(fig)
        except Exception:  # noqa: BLE001 - the report itself will say what is missing
            pass

    def finish(self) -> None:
        """Skip the warm-up if it has not begun, else wait for it to end."""
        self._cancel.set()
        self.join()


def warm_up(delay_s: float = 2.0) -> WarmUp:
    """Start the warm-up (after ``delay_s``) in a daemon thread; call ``finish()`` before exiting."""
    t = WarmUp(delay_s)
    t.start()
    return t
