"""``tgrs export``: a run's kept trajectories, with agent-trace hygiene, in the trainers' formats.

:func:`export_run` is the entry point; :mod:`.source` finds the records, :mod:`.hygiene` cleans
them, :mod:`.writers` converts and writes them, :mod:`.pairs` pairs accepted with rejected ones for
DPO. Nothing here imports ``datasets`` or ``transformers`` until an ``hf`` export or a
``--tokenizer`` asks for it.
"""

from .hygiene import SECRET_PATTERNS, Hygiene
from .pairs import PairSet, PairSettings, export_pairs, pair_candidates
from .run import ExportReport, export_run
from .writers import FORMATS

__all__ = ["FORMATS", "SECRET_PATTERNS", "ExportReport", "Hygiene", "PairSet", "PairSettings", "export_pairs",
           "export_run", "pair_candidates"]
