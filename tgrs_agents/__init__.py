"""tgrs-agents: teacher-guided rejection sampling for LLM agents.

Public names are re-exported here; everything else is private. Importing this package pulls in
none of torch, transformers, openai or anthropic.
"""

import importlib
from typing import TYPE_CHECKING

from .cluster.api import curate
from .curation.panel import Panel
from .curation.panel_file import PanelConfig, load_panel
from .curation.policy import Policy, make_policy, select_best_k
from .curation.run import CurateOptions, CurateRun
from .errors import (
    BudgetExhausted,
    CallsStopped,
    ConfigError,
    Halted,
    InputError,
    RunStoreError,
    TeacherError,
    TgrsError,
)
from .events import (
    CandidateDecided,
    CandidateInvalid,
    CandidateLoaded,
    Event,
    EventBus,
    RunFinished,
    RunStarted,
    RunStopped,
    VerdictReceived,
)
from .paid.cost import Budget, Price
from .paid.ledger import Ledger
from .paid.limits import EndpointLimiter, EndpointLimits, FakeClock, LimiterRegistry, SystemClock
from .paid.services import Services
from .teachers.base import BuildContext, Teacher, TeacherConfig, register_teacher
from .teachers.batching import MicroBatcher
from .types import Candidate, Decision, Message, Task, ToolCall, Usage, Verdict

if TYPE_CHECKING:  # loaded lazily (see _LAZY)
    from .export import ExportReport, Hygiene, export_run
    from .loop.config import LoopConfig, load_run_config
    from .loop.distill import DistillResult, SFTSettings, distill
    from .loop.rounds import ExpertIteration

__version__ = "0.1.0"

# The loop and the export are loaded on first use: `tgrs curate` starts without them.
_LAZY = {
    "DistillResult": ".loop.distill",
    "ExpertIteration": ".loop.rounds",
    "ExportReport": ".export",
    "Hygiene": ".export",
    "LoopConfig": ".loop.config",
    "SFTSettings": ".loop.distill",
    "distill": ".loop.distill",
    "export_run": ".export",
    "load_run_config": ".loop.config",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Budget",
    "BudgetExhausted",
    "BuildContext",
    "CallsStopped",
    "Candidate",
    "CandidateDecided",
    "CandidateInvalid",
    "CandidateLoaded",
    "ConfigError",
    "CurateOptions",
    "CurateRun",
    "Decision",
    "DistillResult",
    "EndpointLimiter",
    "EndpointLimits",
    "Event",
    "EventBus",
    "ExpertIteration",
    "ExportReport",
    "FakeClock",
    "Halted",
    "Hygiene",
    "InputError",
    "Ledger",
    "LimiterRegistry",
    "LoopConfig",
    "Message",
    "MicroBatcher",
    "Panel",
    "PanelConfig",
    "Policy",
    "Price",
    "RunFinished",
    "RunStarted",
    "RunStopped",
    "RunStoreError",
    "SFTSettings",
    "Services",
    "SystemClock",
    "Task",
    "Teacher",
    "TeacherConfig",
    "TeacherError",
    "TgrsError",
    "ToolCall",
    "Usage",
    "Verdict",
    "VerdictReceived",
    "curate",
    "distill",
    "export_run",
    "load_panel",
    "load_run_config",
    "make_policy",
    "register_teacher",
    "select_best_k",
]
