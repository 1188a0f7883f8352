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
import time


def _warm(delay_s: float) -> None:
    time.sleep(delay_s)  # past the run's first second, which the limiter paces
    try:
        from . import html  # noqa: F401 - numpy, the report's modules
        from .plots import _fig, _png

        fig, ax = _fig("warm-up")  # matplotlib, its Agg backend and fonts
        ax.plot([0, 1], [0, 1], label="x")
        ax.legend()
        _png(fig)
    except Exception:  # noqa: BLE001 - the report itself will say what is missing
        pass


def warm_up(delay_s: float = 2.0) -> threading.Thread:
    """Start the warm-up (after ``delay_s``) in a daemon thread; returns it (tests join it)."""
    t = threading.Thread(target=_warm, args=(delay_s,), name="tgrs-report-warm-up", daemon=True)
    t.start()
    return t
