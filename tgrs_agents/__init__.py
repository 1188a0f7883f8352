"""tgrs-agents: teacher-guided rejection sampling for LLM agents.

Public names are re-exported here; everything else is private. Importing this package pulls in
none of torch, transformers, openai or anthropic.
"""

from .config import PanelConfig, load_panel
from .errors import (
    BudgetExhausted,
    ConfigError,
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
from .panel import Panel
from .pipeline import CurateOptions, CurateRun, curate
from .policy import Policy, make_policy, select_best_k
from .teachers.base import BuildContext, Teacher, TeacherConfig, register_teacher
from .types import Candidate, Decision, Message, Task, ToolCall, Usage, Verdict

__version__ = "0.1.0"

__all__ = [
    "BudgetExhausted",
    "BuildContext",
    "Candidate",
    "CandidateDecided",
    "CandidateInvalid",
    "CandidateLoaded",
    "ConfigError",
    "CurateOptions",
    "CurateRun",
    "Decision",
    "Event",
    "EventBus",
    "InputError",
    "Message",
    "Panel",
    "PanelConfig",
    "Policy",
    "RunFinished",
    "RunStarted",
    "RunStopped",
    "RunStoreError",
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
    "load_panel",
    "make_policy",
    "register_teacher",
    "select_best_k",
]
