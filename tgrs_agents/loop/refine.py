"""The optional refine stage: a teacher rewrites a candidate, the *student* decides which version to keep.

After Selective Reflection-Tuning (Li et al., 2024): a teacher model rewrites the instruction
and/or the response of an accepted trajectory; the student scores both versions with its own
IFD and r-IFD (:mod:`tgrs_agents.teachers.student_compat`) and keeps the one that suits it.

What a refiner rewrites (``target``)
    ``"response"``: the text of the *final* assistant message. Tool calls and tool results are kept
    as they happened: they record what the environment returned, and a rewrite could not re-run them.
    ``"instruction"``: the text of the last message before the first assistant turn (the user's
    request). ``"both"``: both, in two requests. Nothing else changes (ids, tools, reference).

Implementations of the :class:`Refiner` protocol (``async def refine(candidate) -> Candidate``):

* :class:`OpenAIRefiner`: any OpenAI-compatible chat model through the ``openai`` SDK, one
  request per rewrite through the paid-call layer (limiter, retries, budget, cost, like a judge),
  structured output ``{"text": ...}`` (a plain-text reply is used as is).
* :class:`GeneratorRefiner`: a local model through a generation backend
  (:class:`~tgrs_agents.generate.hf.TransformersBackend`); concurrent rewrites are coalesced into
  one ``complete`` call by a :class:`~tgrs_agents.teachers.batching.MicroBatcher`.

The choice (:func:`choose`), exactly
    1. Nothing changed: ``original``.
    2. The instruction changed (``instruction`` or ``both``): prefer ``refined`` iff its IFD is
       strictly *higher* than the original's (SRT's instruction step: the rewritten pair is harder
       for the student, so it has more to learn from it).
    3. Only the response changed: prefer ``refined`` iff its r-IFD is strictly *lower* (SRT's
       response step: the instruction is easier to guess back from the new response, i.e. the
       response answers it more specifically). With ``response_metric="ifd"``, or when r-IFD was
       not computed: iff its IFD is strictly lower (the instruction helps the student more with the
       new response). Ties keep the original.
    4. The preferred version must be inside the bounds (:class:`~tgrs_agents.teachers.student_compat.Bounds`,
       default ``IFD < 1``). If it is not, the other version is taken when *it* is inside; if
       neither is, the candidate is ``dropped``. (SRT's selection code drops in this case even when
       the other version is inside; keeping a usable version is our one departure.)

Every decision is recorded, one JSON line per candidate in ``refine.jsonl``: ``id``, ``task_id``,
``changed``, ``choice`` (original / refined / dropped), ``reason``, ``scores`` of both versions,
and both versions themselves (``original``, ``refined``) as SFT records.
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import CallsStopped, TeacherError
from ..teachers.batching import MicroBatcher
from ..teachers.student_compat import Bounds, CompatScores, instruction_text, split_instruction, transcript
from ..types import Candidate, Usage

if TYPE_CHECKING:
    from ..paid.services import Services

Target = Literal["response", "instruction", "both"]
Choice = Literal["original", "refined", "dropped"]

RESPONSE_PROMPT = """You improve training data for an AI agent that uses tools.

Rewrite the agent's FINAL message so that it answers the request better. {criteria}
Keep every fact the tool results established; do not invent new tool results. Keep the answer
format the final message uses (for example a line "Answer: <value>").

<request>
{instruction}
</request>
<trajectory>
{trajectory}
</trajectory>
<final>
{final}
</final>

Reply with the rewritten final message only."""

INSTRUCTION_PROMPT = """You improve training data for an AI agent that uses tools.

Rewrite the user's REQUEST so that it is clearer and more specific, while the agent's trajectory
below still answers it exactly. {criteria}

<request>
{instruction}
</request>
<trajectory>
{trajectory}
</trajectory>

Reply with the rewritten request only."""

REWRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


@runtime_checkable
class Refiner(Protocol):
    """Rewrites a candidate; returns a new candidate (the input is never changed)."""

    name: str

    async def refine(self, candidate: Candidate) -> Candidate: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CompatScorer(Protocol):
    """Anything that gives a candidate's IFD / r-IFD, e.g. a ``StudentCompatTeacher``."""

    async def scores(self, candidate: Candidate) -> CompatScores: ...


# ------------------------------------------------------------------------------------ refiners

def _instruction_index(c: Candidate) -> int | None:
    """Index of the last message before the first assistant turn (the request), if any."""
    first = next((i for i, m in enumerate(c.messages) if m.role == "assistant"), None)
    return first - 1 if first else None


def _final_index(c: Candidate) -> int | None:
    return next((i for i in range(len(c.messages) - 1, -1, -1) if c.messages[i].role == "assistant"), None)


class PromptRefiner(ABC):
    """Fills a rewrite prompt per target and replaces the text it names; subclasses ``ask`` a model."""

    def __init__(self, *, target: Target = "response", criteria: str = "", name: str = "refiner",
                 response_prompt: str = RESPONSE_PROMPT, instruction_prompt: str = INSTRUCTION_PROMPT) -> None:
        if target not in ("response", "instruction", "both"):
            raise ValueError(f"target must be response, instruction or both; got {target!r}")
        self.target = target
        self.criteria = criteria
        self.name = name
        self.prompts = {"response": response_prompt, "instruction": instruction_prompt}

    def prompt(self, c: Candidate, what: Literal["response", "instruction"]) -> str:
        instruction, response = split_instruction(c)
        fields = {"criteria": self.criteria, "instruction": instruction_text(instruction),
                  "trajectory": transcript(response), "final": c.final_text}
        return self.prompts[what].format(**fields)

    @abstractmethod
    async def ask(self, prompt: str) -> str:
        """The model's reply text to one prompt."""

    async def refine(self, candidate: Candidate) -> Candidate:
        new = candidate.model_copy(deep=True)
        jobs: list[tuple[Literal["response", "instruction"], int | None]] = []
        if self.target in ("instruction", "both"):
            jobs.append(("instruction", _instruction_index(candidate)))
        if self.target in ("response", "both"):
            jobs.append(("response", _final_index(candidate)))
        texts = await asyncio.gather(*(self.ask(self.prompt(candidate, what)) for what, i in jobs
                                       if i is not None))
        done = iter(texts)
        for _, i in jobs:
            if i is None:
                continue
            text = next(done).strip()
            if text:
                new.messages[i] = new.messages[i].model_copy(update={"content": text})
        new.metadata = {**new.metadata, "refined_by": self.name}
        return new

    async def aclose(self) -> None:
        return None


class OpenAIRefiner(PromptRefiner):
    """A refiner on any OpenAI-compatible chat endpoint (``client`` may be injected, e.g. for tests).

    Each rewrite crosses the paid-call layer like a judge call: the endpoint's limiter from
    ``services`` (shared with judges and the generator on the same endpoint), the run's retry
    policy bounded by ``max_attempts``, and the run's budget, priced at the model's list price or
    ``price_*_per_mtok`` (an unknown model needs them; 0 for a self-hosted one). ``usage`` adds up
    every attempt. Rewrites are not cached: the ledger holds verdicts keyed by a candidate, a
    finished refine stage is recorded in ``refine.jsonl`` and not re-run, and an API model at
    temperature 0 is not deterministic enough to promise the same rewrite twice.
    ``max_retries`` is the old name of ``max_attempts - 1`` (the SDK's own retries are off).
    """

    def __init__(self, model: str, *, client: Any = None, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", temperature: float = 0.0,
                 max_tokens: int = 512, timeout_s: float = 60.0, max_retries: int | None = None,
                 structured: bool = True, services: Services | None = None, rpm: float | None = None,
                 tpm: float | None = None, max_concurrency: int = 512, max_attempts: int = 5,
                 price_input_per_mtok: float | None = None, price_output_per_mtok: float | None = None,
                 **kw: Any) -> None:
        from ..generate.openai_backend import ChatCompletions
        from ..paid.limits import EndpointLimits
        from ..paid.services import Services

        super().__init__(**{"name": f"openai:{model}", **kw})
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.structured = structured
        self.calls = 0
        self.usage = Usage()
        self.services = services or Services()
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.adapter = ChatCompletions(
            f"refiner:{model}", model, url, api_key_env,
            limits=EndpointLimits(rpm=rpm, tpm=tpm, max_concurrency=max_concurrency),
            price_input_per_mtok=price_input_per_mtok, price_output_per_mtok=price_output_per_mtok,
            timeout_s=timeout_s, max_attempts=max_attempts if max_retries is None else max_retries + 1,
            client=client)
        self._paid = self.services.stack(self.adapter)

    @property
    def client(self) -> Any:
        return self.adapter.client

    async def ask(self, prompt: str) -> str:
        from ..generate.openai_backend import ChatRequest

        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "rewrite", "strict": True, "schema": REWRITE_SCHEMA}}
        self.calls += 1
        try:
            paid = await self._paid.call(ChatRequest(body, len(prompt) // 4 + 16, self.max_tokens))
        except (TeacherError, CallsStopped) as e:
            self.usage = self.usage + (e.usage or Usage())
            raise
        self.usage = self.usage + paid.usage
        resp = paid.value
        content = (resp.choices[0].message.content if resp.choices else None) or ""
        if self.structured:
            try:
                parsed = json.loads(content)
            except ValueError:
                return content
            if isinstance(parsed, dict) and isinstance(parsed.get("text"), str):
                return str(parsed["text"])
        return content

    async def aclose(self) -> None:
        await self.adapter.aclose()


class GeneratorRefiner(PromptRefiner):
    """A refiner on a local generation backend (``generate.hf.TransformersBackend`` or any ``ChatBackend``)."""

    def __init__(self, backend: Any, *, params: Any = None, max_batch_size: int = 64, max_wait_ms: float = 10.0,
                 **kw: Any) -> None:
        from ..generate.base import SamplingParams

        super().__init__(**{"name": f"generator:{type(backend).__name__}", **kw})
        self.backend = backend
        self.params = params or SamplingParams(temperature=0.0, max_new_tokens=256)
        self.batcher: MicroBatcher[str, str] = MicroBatcher(self._complete, max_batch_size=max_batch_size,
                                                            max_wait_ms=max_wait_ms, name="refine-gen")

    async def _complete(self, prompts: list[str]) -> list[str]:
        turns = await self.backend.complete([[{"role": "user", "content": p}] for p in prompts],
                                            [None] * len(prompts), self.params)
        return [t.text for t in turns]

    async def ask(self, prompt: str) -> str:
        return await self.batcher.submit(prompt)

    async def aclose(self) -> None:
        await self.batcher.aclose()


# ----------------------------------------------------------------------------------- selection

def changed(original: Candidate, refined: Candidate) -> Literal["none", "instruction", "response", "both"]:
    """Which side of the split at the first assistant turn differs between the two versions."""
    (qi, ri), (qr, rr) = split_instruction(original), split_instruction(refined)
    q, r = qi != qr, ri != rr
    return "both" if q and r else "instruction" if q else "response" if r else "none"


@dataclass(frozen=True, slots=True)
class Selection:
    choice: Choice
    reason: str


def choose(original: CompatScores, refined: CompatScores, what_changed: str, bounds: Bounds = Bounds(),
           response_metric: Literal["rifd", "ifd"] = "rifd") -> Selection:
    """The rule in the module docstring, steps 1 to 4."""
    if what_changed == "none":
        prefer, why = "original", "the refiner changed nothing"
    elif refined.error is not None:
        prefer, why = "original", f"refined version not scorable: {refined.error}"
    elif original.error is not None:
        prefer, why = "refined", f"original not scorable: {original.error}"
    elif what_changed in ("instruction", "both"):
        assert original.ifd is not None and refined.ifd is not None
        up = refined.ifd > original.ifd
        prefer = "refined" if up else "original"
        why = f"ifd {refined.ifd:.4g} {'>' if up else '<='} {original.ifd:.4g} (instruction: higher wins)"
    else:
        metric = response_metric if refined.rifd is not None and original.rifd is not None else "ifd"
        new, old = getattr(refined, metric), getattr(original, metric)
        assert new is not None and old is not None
        down = new < old
        prefer = "refined" if down else "original"
        why = f"{metric} {new:.4g} {'<' if down else '>='} {old:.4g} (response: lower wins)"
    other = "original" if prefer == "refined" else "refined"
    scores = {"original": original, "refined": refined}
    bad = bounds.violation(scores[prefer])
    if bad is None:
        return Selection(prefer, why)  # type: ignore[arg-type]
    if what_changed != "none" and bounds.violation(scores[other]) is None:
        return Selection(other, f"{why}; but {prefer} is out of bounds ({bad}), {other} is inside")  # type: ignore[arg-type]
    return Selection("dropped", f"{why}; out of bounds: {bad}")


@dataclass
class RefineOutcome:
    chosen: list[Candidate]  # the version kept of each candidate (dropped ones are absent)
    records: list[dict[str, Any]]  # one per candidate, as written to refine.jsonl
    counts: Counter[str] = field(default_factory=Counter)  # choice -> how many


async def refine_and_select(candidates: Iterable[Candidate | dict[str, Any]], refiner: Refiner,
                            scorer: CompatScorer, *, bounds: Bounds = Bounds(),
                            response_metric: Literal["rifd", "ifd"] = "rifd", log: str | Path | None = None,
                            max_concurrency: int = 64, journal: str | Path | None = None) -> RefineOutcome:
    """Refine every candidate, score both versions with the student, keep one; optionally write ``log``.

    A refiner that raises for a candidate leaves it ``original`` (the error is the reason).
    Candidates run concurrently (``max_concurrency``), so the scorer's micro-batcher fills batches.
    Results keep the input order. ``journal``: each rewrite is kept there as it arrives and taken from
    there when the stage runs again (:mod:`.rewrites`), so a killed stage pays for no rewrite twice.
    """
    from .rewrites import RewriteJournal

    cands = [c if isinstance(c, Candidate) else Candidate.model_validate(c) for c in candidates]
    sem = asyncio.Semaphore(max_concurrency)
    rewrites = RewriteJournal(journal) if journal is not None else None

    async def rewrite(c: Candidate) -> Candidate:
        r = rewrites.get(c) if rewrites is not None else None
        if r is None:
            r = await refiner.refine(c)
            if rewrites is not None:
                rewrites.add(c, r)
        return r

    async def one(c: Candidate) -> tuple[Candidate | None, dict[str, Any]]:
        async with sem:
            try:
                r = await rewrite(c)
            except Exception as e:  # noqa: BLE001 - one bad rewrite must not stop the stage
                s = await scorer.scores(c)
                sel = Selection("original" if bounds.violation(s) is None else "dropped",
                                f"refiner failed: {type(e).__name__}: {e}")
                return (c if sel.choice == "original" else None), _record(c, None, s, None, "none", sel, refiner)
            what = changed(c, r)
            s_orig, s_ref = await asyncio.gather(scorer.scores(c), scorer.scores(r))
            sel = choose(s_orig, s_ref, what, bounds, response_metric)
            kept = {"original": c, "refined": r}.get(sel.choice)
            return kept, _record(c, r, s_orig, s_ref, what, sel, refiner)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(c)) for c in cands]
    results = [t.result() for t in tasks]
    out = RefineOutcome([k for k, _ in results if k is not None], [rec for _, rec in results])
    out.counts.update(rec["choice"] for rec in out.records)
    if log is not None:
        path = Path(log)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in out.records)
    return out


def _record(c: Candidate, r: Candidate | None, s_orig: CompatScores, s_ref: CompatScores | None, what: str,
            sel: Selection, refiner: Refiner) -> dict[str, Any]:
    return {
        "id": c.id,
        "task_id": c.task_id,
        "refiner": getattr(refiner, "name", type(refiner).__name__),
        "changed": what,
        "choice": sel.choice,
        "reason": sel.reason,
        "scores": {"original": s_orig.to_json(), "refined": s_ref.to_json() if s_ref is not None else None},
        "original": c.sft_record(),
        "refined": r.sft_record() if r is not None else None,
    }


async def refine_file(input_path: str | Path, out_dir: str | Path, refiner: Refiner, scorer: CompatScorer,
                      **kw: Any) -> RefineOutcome:
    """``accepted.jsonl`` in; ``out_dir/refine.jsonl`` (every decision) and ``out_dir/refined.jsonl``
    (the kept versions, ready for :func:`~tgrs_agents.loop.distill.distill`) out; the paid rewrites are
    journaled in ``out_dir/rewrites.jsonl`` as they arrive (a killed stage pays for none twice)."""
    from ..curation.store import iter_jsonl

    out_dir = Path(out_dir)
    out = await refine_and_select(list(iter_jsonl(Path(input_path))), refiner, scorer,
                                  log=out_dir / "refine.jsonl", journal=out_dir / "rewrites.jsonl", **kw)
    with (out_dir / "refined.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(c.sft_record()) + "\n" for c in out.chosen)
    return out
