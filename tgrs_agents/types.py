"""The data model: tasks, candidate trajectories, verdicts, usage and decisions (pydantic v2).

A candidate is a trajectory in OpenAI chat format: ``messages`` with assistant ``tool_calls`` and
``tool`` messages, plus the optional ``tools`` JSON schemas the agent was given. Unknown fields on a
message are kept (``extra="allow"``) so nothing an agent framework wrote is lost on the way to SFT.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool")


def content_text(content: Any, sep: str = "") -> str:
    """The text of a message ``content``: the string itself, or the ``text`` of each part joined by ``sep``.

    None (and anything that is not a string or a list) is ``""``; a part without text adds ``""``;
    a bare string in the list is taken as text. The one content reader: :mod:`tgrs_agents.chat`
    re-exports it for every other reader.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return sep.join(_part_text(p) for p in content)
    return ""


def _part_text(part: Any) -> str:
    if isinstance(part, dict):
        t = part.get("text")
        return "" if t is None else str(t)
    return part if isinstance(part, str) else ""


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """One chat message. ``content`` is text or a list of content parts (OpenAI style)."""

    model_config = ConfigDict(extra="allow")
    role: Role
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text: the string content, or its text parts joined."""
        return content_text(self.content)


class Task(BaseModel):
    """A problem to solve: the prompt messages, a reference answer and/or tests."""

    model_config = ConfigDict(frozen=True)
    id: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    reference: Any = None
    tests: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Candidate(BaseModel):
    """One trajectory to be judged. ``task_id`` groups the candidates of one task (for best-k)."""

    id: str = Field(min_length=1)
    task_id: str = ""
    messages: list[Message] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    reference: Any = None
    tests: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task_id")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    def model_post_init(self, __context: Any) -> None:
        if not self.task_id:
            self.task_id = self.id

    # --- convenient views -------------------------------------------------------------------
    @property
    def final_message(self) -> Message | None:
        """The last assistant message, or None if the trajectory has none."""
        for m in reversed(self.messages):
            if m.role == "assistant":
                return m
        return None

    @property
    def final_text(self) -> str:
        m = self.final_message
        return m.text if m is not None else ""

    @property
    def task_text(self) -> str:
        """The first user message: what the agent was asked."""
        for m in self.messages:
            if m.role == "user":
                return m.text
        return ""

    def sft_record(self) -> dict[str, Any]:
        """The fields an SFT trainer reads: id, task_id, messages and tools."""
        return {
            "id": self.id,
            "task_id": self.task_id,
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in self.messages],
            "tools": self.tools,
        }


class Usage(BaseModel):
    """Tokens and requests spent. Usages add up: ``a + b``."""

    model_config = ConfigDict(frozen=True)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class Verdict(BaseModel):
    """One teacher's judgement of one candidate. ``score`` is in [0, 1].

    A verdict with ``error`` set carries no judgement: acceptance policies treat it as unknown.
    """

    model_config = ConfigDict(frozen=True)
    teacher: str
    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    rationale: str = ""
    usage: Usage = Usage()
    latency_s: float = 0.0
    # of the paid attempts inside ``latency_s``: the remote calls themselves, and the time queued in
    # the client-side rate limiter for a slot or a rate token (0 for teachers that call nothing)
    service_s: float = 0.0
    wait_s: float = 0.0
    cached: bool = False
    error: str | None = None

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    @classmethod
    def failure(
        cls, teacher: str, error: str, *, latency_s: float = 0.0, usage: Usage | None = None
    ) -> Verdict:
        return cls(teacher=teacher, passed=False, score=0.0, error=error, latency_s=latency_s,
                   usage=usage or Usage())


class Decision(BaseModel):
    """What the panel decided for one candidate.

    ``accepted`` is None when teacher errors left the outcome open (the candidate failed and is
    retried by the next run on the same directory).
    """

    model_config = ConfigDict(frozen=True)
    candidate_id: str
    task_id: str
    accepted: bool | None
    score: float
    reason: str
    decided_by: str | None = None
    verdicts: tuple[Verdict, ...] = ()
    saved: tuple[str, ...] = ()
