"""tgrs-agents: teacher-guided rejection sampling for LLM agents.

Public names are re-exported here, each loaded on first use (PEP 562): ``import tgrs_agents`` is
nearly free, so a process that needs one module (a Ray actor, ``tgrs --help``) pays for that one
only. Everything else is private. No name pulls in torch, transformers, openai or anthropic.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time each name loads on first use (_LAZY)
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
    from .export import ExportReport, Hygiene, export_run
    from .loop.config import LoopConfig, load_run_config
    from .loop.distill import DistillResult, SFTSettings, distill
    from .loop.rounds import ExpertIteration
    from .paid.cost import Budget, Price
    from .paid.ledger import Ledger
    from .paid.limits import EndpointLimiter, EndpointLimits, FakeClock, LimiterRegistry, SystemClock
    from .paid.services import Services
    from .teachers.base import BuildContext, Teacher, TeacherConfig, register_teacher
    from .teachers.batching import MicroBatcher
    from .types import Candidate, Decision, Message, Task, ToolCall, Usage, Verdict

__version__ = "0.1.0"

_LAZY = {
    "Budget": ".paid.cost",
    "BudgetExhausted": ".errors",
    "BuildContext": ".teachers.base",
    "CallsStopped": ".errors",
    "Candidate": ".types",
    "CandidateDecided": ".events",
    "CandidateInvalid": ".events",
    "CandidateLoaded": ".events",
    "ConfigError": ".errors",
    "CurateOptions": ".curation.run",
    "CurateRun": ".curation.run",
    "Decision": ".types",
    "DistillResult": ".loop.distill",
    "EndpointLimiter": ".paid.limits",
    "EndpointLimits": ".paid.limits",
    "Event": ".events",
    "EventBus": ".events",
    "ExpertIteration": ".loop.rounds",
    "ExportReport": ".export",
    "FakeClock": ".paid.limits",
    "Halted": ".errors",
    "Hygiene": ".export",
    "InputError": ".errors",
    "Ledger": ".paid.ledger",
    "LimiterRegistry": ".paid.limits",
    "LoopConfig": ".loop.config",
    "Message": ".types",
    "MicroBatcher": ".teachers.batching",
    "Panel": ".curation.panel",
    "PanelConfig": ".curation.panel_file",
    "Policy": ".curation.policy",
    "Price": ".paid.cost",
    "RunFinished": ".events",
    "RunStarted": ".events",
    "RunStopped": ".events",
    "RunStoreError": ".errors",
    "SFTSettings": ".loop.distill",
    "Services": ".paid.services",
    "SystemClock": ".paid.limits",
    "Task": ".types",
    "Teacher": ".teachers.base",
    "TeacherConfig": ".teachers.base",
    "TeacherError": ".errors",
    "TgrsError": ".errors",
    "ToolCall": ".types",
    "Usage": ".types",
    "Verdict": ".types",
    "VerdictReceived": ".events",
    "curate": ".cluster.api",
    "distill": ".loop.distill",
    "export_run": ".export",
    "load_panel": ".curation.panel_file",
    "load_run_config": ".loop.config",
    "make_policy": ".curation.policy",
    "register_teacher": ".teachers.base",
    "select_best_k": ".curation.policy",
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
