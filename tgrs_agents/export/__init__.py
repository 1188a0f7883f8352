"""``tgrs export``: a run's kept trajectories, with agent-trace hygiene, in the trainers' formats.

:func:`export_run` is the entry point; :mod:`.source` finds the records, :mod:`.hygiene` cleans
them, :mod:`.writers` converts and writes them. Nothing here imports ``datasets`` or
``transformers`` until an ``hf`` export or a ``--tokenizer`` asks for it.
"""

from .hygiene import SECRET_PATTERNS, Hygiene
from .run import ExportReport, export_run
from .writers import FORMATS

__all__ = ["FORMATS", "SECRET_PATTERNS", "ExportReport", "Hygiene", "export_run"]
