"""What the OpenAI and Anthropic judges share: config, prompt rendering, the verdict schema.

A judge fills a prompt template from ``prompts/`` with ``{task}`` (the first user message),
``{trajectory}`` (a readable transcript, tool calls and results included), ``{final}`` (the final
assistant message), ``{reference}`` and ``{rubric}``, and asks for structured output: ``score``
(0-10), ``passed`` and ``rationale``. Decoding is deterministic by default: temperature 0 and
``seed = 0`` (sent where the API takes one: OpenAI-compatible servers; Anthropic has no seed, yet
the seed still keys the ledger, so ``repeats`` never share a cache entry). ``mode = "group"``
scores every candidate of a task in one call instead (:mod:`.group_judge`). The adapter fulfils the paid-call contract
(:class:`~tgrs_agents.paid.call.PaidAdapter`): ``call`` makes one attempt and returns the verdict
with its usage and the response's headers; the layer around it
(:meth:`~tgrs_agents.paid.services.Services.wrap`) adds limits, retries, cost and the cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..assets import asset_path
from ..errors import ConfigError, TeacherError
from ..paid.call import CacheIdentity, Paid
from ..paid.cost import price_for
from ..paid.limits import EndpointLimits, endpoint_key
from ..paid.sdk_errors import classify_sdk_error
from ..types import Candidate, Usage, Verdict
from .base import BuildContext, Teacher, TeacherConfig

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 10},
        "passed": {"type": "boolean"},
        "rationale": {"type": "string"},
    },
    "required": ["score", "passed", "rationale"],
    "additionalProperties": False,
}
_VARS = re.compile(r"\{(task|trajectory|final|reference|rubric)\}")


class JudgeOutput(BaseModel):
    score: float = Field(ge=0, le=10)
    passed: bool
    rationale: str = ""


class BatchSettings(BaseModel):
    """``mode = "batch"``: how requests are grouped into provider batches and how often they are polled.

    A batch is submitted once it holds ``max_items`` requests or ``max_bytes`` bytes, or its first
    request has waited ``window_s`` (so none waits for a batch that never fills); at most
    ``max_parked`` candidates wait for batch verdicts at once (the run reads on meanwhile)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_items: int = Field(1000, ge=1, le=50_000)  # OpenAI's ceiling per file (Anthropic's: 100,000)
    max_bytes: int = Field(100 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024)
    window_s: float = Field(300.0, gt=0)
    poll_s: float = Field(60.0, gt=0)
    max_parked: int = Field(10_000, ge=1)
    max_resubmits: int = Field(2, ge=0, le=10)

    @model_validator(mode="after")
    def _parked_holds_a_batch(self) -> BatchSettings:
        if self.max_parked < self.max_items:
            raise ValueError(f"max_parked ({self.max_parked}) must be at least max_items ({self.max_items}): "
                             "a batch could never fill")
        return self


class JudgeConfig(TeacherConfig):
    OPERATIONAL: ClassVar[frozenset[str]] = TeacherConfig.OPERATIONAL | {
        "api_key_env", "rpm", "tpm", "input_tpm", "output_tpm", "timeout_s", "max_attempts",
        "price_input_per_mtok", "price_output_per_mtok", "group_wait_ms", "batch",
    }
    GROUP_ONLY: ClassVar[tuple[str, ...]] = ("mode", "debias", "max_group")
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str = "judge_default"
    rubric: str = ""
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(512, ge=16)
    rpm: float | None = Field(None, gt=0)
    tpm: float | None = Field(None, gt=0)
    input_tpm: float | None = Field(None, gt=0)
    output_tpm: float | None = Field(None, gt=0)
    max_concurrency: int = Field(256, ge=1)  # a ceiling: the endpoint's limiter sets the pace
    price_input_per_mtok: float | None = Field(None, ge=0)
    price_output_per_mtok: float | None = Field(None, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    cost_rank: int = 10
    seed: int | None = 0  # sent where the API has one; in the identity, so repeats key apart
    mode: Literal["pointwise", "group", "batch"] = "pointwise"  # batch: the provider's batch API
    debias: Literal["none", "swap"] = "none"  # group mode: also judge the reversed order
    max_group: int = Field(16, ge=2, le=64)  # group mode: candidates of one task per call
    group_wait_ms: float = Field(50.0, ge=0)  # group mode: a group closes after this long quiet
    batch: BatchSettings = BatchSettings()  # batch mode (operational: a verdict is one either way)

    @model_validator(mode="after")
    def _group_fields(self) -> JudgeConfig:
        if self.debias == "swap" and self.mode != "group":
            raise ValueError("debias = 'swap' needs mode = 'group' (it reorders a group's candidates)")
        return self

    def identity(self) -> dict[str, Any]:
        """As every teacher's; a pointwise judge leaves the group-only fields out, and so does a
        batch one: it asks the same request, so its verdicts share the online ones' ledger keys."""
        ident = super().identity()
        if self.mode in ("pointwise", "batch"):
            for k in self.GROUP_ONLY:
                ident.pop(k, None)
        return ident


def load_prompt(name: str, base_dir: Path) -> str:
    """A template by shipped name (``judge_default``) or by path (relative to the panel file)."""
    p = Path(name)
    candidates = [p if p.is_absolute() else base_dir / p]
    if p.suffix == "" and len(p.parts) == 1:
        candidates.append(base_dir / "prompts" / f"{name}.md")
        try:
            candidates.append(asset_path(f"prompts/{name}.md"))
        except FileNotFoundError:
            pass
    for c in candidates:
        if c.is_file():
            return c.read_text()
    raise FileNotFoundError(f"no prompt {name!r} (looked in {', '.join(map(str, candidates))})")


def render_transcript(candidate: Candidate) -> str:
    """The judges' ``{trajectory}``: :data:`tgrs_agents.chat.JUDGE` (one renderer for the project)."""
    from ..chat import JUDGE, render

    return render(candidate.messages, JUDGE)


def render_prompt(template: str, candidate: Candidate, rubric: str) -> str:
    ref = candidate.reference
    values = {
        "task": candidate.task_text,
        "trajectory": render_transcript(candidate),
        "final": candidate.final_text,
        "reference": "(none)" if ref is None else (ref if isinstance(ref, str) else json.dumps(ref)),
        "rubric": rubric or "(none)",
    }
    return _VARS.sub(lambda m: values[m.group(1)], template)


def parse_output(data: Any) -> JudgeOutput:
    if isinstance(data, str):
        data = json.loads(data)
    return JudgeOutput.model_validate(data)


class ApiJudge(Teacher):
    """Base of the API judges: a :class:`~tgrs_agents.paid.call.PaidJudge`.

    Subclasses connect their SDK (:meth:`_connect`) and implement :meth:`call`, one request.
    ``judge`` alone is that one attempt with nothing around it; the panel always sees the judge
    through :meth:`Services.wrap <tgrs_agents.paid.services.Services.wrap>`.
    """

    config: JudgeConfig

    def __init__(self, config: JudgeConfig, ctx: BuildContext | None = None, *,
                 client: Any = None) -> None:
        super().__init__(config, ctx)
        field = f"teacher.{config.name}"
        prompt = "judge_group" if config.mode == "group" and config.prompt == "judge_default" else config.prompt
        try:
            self.template = load_prompt(prompt, self.ctx.base_dir)
        except FileNotFoundError as e:
            raise ConfigError(str(e), file=self.ctx.source, field=f"{field}.prompt") from None
        price = price_for(config.model, config.price_input_per_mtok, config.price_output_per_mtok)
        if price is None:
            raise ConfigError(
                f"no price known for model {config.model!r}: set price_input_per_mtok and "
                "price_output_per_mtok (0 for a self-hosted model)",
                file=self.ctx.source, field=f"{field}.price_input_per_mtok")
        self.price = price
        self._client = client
        self._prompts: dict[int, tuple[Candidate, str]] = {}  # recent renders, by candidate
        if client is None and not os.environ.get(config.api_key_env):
            raise ConfigError(
                f"environment variable {config.api_key_env} is not set (the API key is read "
                "from it and nowhere else)", file=self.ctx.source, field=f"{field}.api_key_env")

    DEFAULT_BASE_URL: ClassVar[str] = ""

    def _connect(self, sdk: Any, client_class: str) -> None:
        """Make the vendor client (unless one was injected), with the SDK's own retries off."""
        self._sdk = sdk
        if self._client is None:
            self._client = getattr(sdk, client_class)(
                api_key=os.environ[self.config.api_key_env], base_url=self.base_url,
                max_retries=0, timeout=self.config.timeout_s,
            )

    WHAT: ClassVar[str] = "output"  # where the structured output travels (for error messages)

    async def ask(self, prompt: str, schema: dict[str, Any], name: str, *,
                  max_tokens: int | None = None) -> tuple[Any, Usage, Mapping[str, str]]:
        """One request for structured output under ``schema``: (the output, usage, headers)."""
        raise NotImplementedError

    async def call(self, candidate: Candidate) -> Paid[Verdict]:
        """One attempt: the verdict, its usage and the response's headers."""
        data, usage, headers = await self.ask(self.prompt_for(candidate), VERDICT_SCHEMA, "verdict")
        return self._paid(data, usage, headers, self.WHAT)

    async def judge(self, candidate: Candidate) -> Verdict:
        return (await self.call(candidate)).value

    def body(self, prompt: str, schema: dict[str, Any], name: str, *,
             max_tokens: int | None = None) -> dict[str, Any]:
        """The request :meth:`ask` sends, as the wire body (what a batch line carries)."""
        raise NotImplementedError

    def request_body(self, candidate: Candidate) -> dict[str, Any]:
        """The verdict request for ``candidate``, exactly as online (``mode = "batch"`` submits it)."""
        return self.body(self.prompt_for(candidate), VERDICT_SCHEMA, "verdict")

    def parse_paid(self, answer: Paid[Any]) -> Paid[Verdict]:
        """A batch answer (the online path's structured output and its usage) parsed as online."""
        return self._paid(answer.value, answer.usage, answer.headers, self.WHAT)

    async def _send(self, create: Callable[..., Any], **request: Any) -> tuple[Any, Mapping[str, str]]:
        """One request through the SDK's raw-response API: the parsed response and its headers;
        SDK exceptions come out classified as :class:`TeacherError` (a 429's headers on it)."""
        try:
            raw = await create(**request)
            resp = raw.parse()
            if inspect.isawaitable(resp):  # the raw response's parse() is async in some SDK versions
                resp = await resp
            return resp, dict(raw.headers.items())
        except Exception as e:
            err = classify_sdk_error(e, self._sdk, self.name)
            if err is None:
                raise
            raise err from None

    def _paid(self, data: Any, usage: Usage, headers: Mapping[str, str], what: str) -> Paid[Verdict]:
        """The verdict in ``data``, or a malformed-output error that still carries usage and headers."""
        out, why = self.parse_or_none(data)
        if out is None:
            raise self.malformed(f"{why}; {what}={json.dumps(data, default=str)[:120]}", usage, headers)
        return Paid(self.to_verdict(out, usage), usage, headers)

    async def aclose(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            await self._client.close()

    @property
    def base_url(self) -> str:
        return self.config.base_url or self.DEFAULT_BASE_URL

    @property
    def endpoint_key(self) -> str:
        return self.endpoint_for(self.config)[0]

    @property
    def limits(self) -> EndpointLimits:
        return self.endpoint_for(self.config)[1]

    @classmethod
    def endpoint_for(cls, c: JudgeConfig) -> tuple[str, EndpointLimits]:
        """The endpoint key and limits a judge of config ``c`` would use, without building it (no SDK
        imported, no client made): a cluster driver starts the endpoint's lease bank from this."""
        key = endpoint_key(c.base_url or cls.DEFAULT_BASE_URL, os.environ.get(c.api_key_env))
        return key, EndpointLimits(rpm=c.rpm, tpm=c.tpm, input_tpm=c.input_tpm, output_tpm=c.output_tpm,
                                   max_concurrency=c.max_concurrency)

    @property
    def max_attempts(self) -> int:
        return self.config.max_attempts

    def cache_identity(self) -> CacheIdentity:
        """The config minus operational knobs, the endpoint, and the hash of template + rubric."""
        ident = self.config.identity()
        ident["base_url"] = self.base_url
        return CacheIdentity(ident, hashlib.sha256(
            (self.template + "\x00" + self.config.rubric).encode()).hexdigest())

    PROMPTS_KEPT = 1024

    def prompt_for(self, candidate: Candidate) -> str:
        """The prompt for ``candidate``; rendered once for the budget's and the limiter's estimates
        and the call itself (the last few renders are kept, keyed by the candidate object)."""
        hit = self._prompts.get(id(candidate))
        if hit is not None and hit[0] is candidate:
            return hit[1]
        text = render_prompt(self.template, candidate, self.config.rubric)
        if len(self._prompts) >= self.PROMPTS_KEPT:
            del self._prompts[next(iter(self._prompts))]
        self._prompts[id(candidate)] = (candidate, text)
        return text

    def estimate(self, candidate: Candidate) -> tuple[int, int]:
        """Tokens before the call: ~4 characters a token in, at most max_tokens out."""
        return len(self.prompt_for(candidate)) // 4 + 16, self.config.max_tokens

    def to_verdict(self, out: JudgeOutput, usage: Usage) -> Verdict:
        return Verdict(teacher=self.name, passed=out.passed, score=out.score / 10,
                       rationale=out.rationale[:2000], usage=usage)

    def malformed(self, detail: str, usage: Usage,
                  headers: Mapping[str, str] | None = None) -> TeacherError:
        return TeacherError(f"judge output did not parse: {detail[:300]}", teacher=self.name,
                            retryable=True, kind="malformed", usage=usage, headers=headers)

    @staticmethod
    def parse_or_none(data: Any) -> tuple[JudgeOutput | None, str]:
        try:
            return parse_output(data), ""
        except (ValueError, ValidationError, TypeError) as e:
            return None, str(e)
