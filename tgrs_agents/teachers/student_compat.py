"""``kind = "student_compat"``: does this trajectory suit the *current student*? IFD and r-IFD.

Two ratios of the student's own perplexities (Li et al., "From Quantity to Quality", 2024, and
"Selective Reflection-Tuning", 2024), computed with the student checkpoint named by ``model``:

* **IFD** = ppl(response | instruction) / ppl(response). Below 1, the instruction helps the
  student predict the response: the pair is aligned. At or above 1 the response is no easier with
  the instruction than without it: misaligned (a trajectory that answers another question, a
  tool call that ignores the numbers asked about). Close to 1 but below it: the student has much to
  learn; close to 0: it knows this already.
* **r-IFD** = ppl(instruction | response) / ppl(instruction): how much the response tells about
  the instruction it answers (low = the instruction can be guessed back from the response).

Exactly what is scored
    The candidate's messages are split at the first assistant message: the *instruction* is every
    message before it (system, user), the *response* every message from it on (assistant turns
    with their tool calls, and tool results).

    * ppl(response | instruction): the whole conversation is rendered with the student's chat
      template and the candidate's ``tools``, ``return_assistant_tokens_mask=True``; the perplexity
      is over the *assistant tokens* (the template's ``{% generation %}`` spans: assistant text,
      tool calls as the template writes them, the turn-end token). Tool results and the template's
      role headers are context, not scored.
    * ppl(response): the response messages alone, rendered the same way (tools included: the tool
      schemas are the environment, not the instruction), perplexity over the same assistant tokens.
    * ppl(instruction | response): a user turn ``rifd_prompt`` with ``{response}`` replaced by a
      plain transcript of the response (assistant text; ``name(arguments)`` per tool call;
      ``-> result`` per tool result), then an assistant turn whose content is the instruction
      text (the instruction messages' texts joined by blank lines); perplexity over that assistant
      turn's tokens.
    * ppl(instruction): that assistant turn alone, the same tokens.

    For templates without ``{% generation %}`` markers the scored tokens are everything after the
    rendered context (tool results included). Sequences longer than ``max_length`` (default: the
    model's ``max_position_embeddings``) are cut at the end, except ppl(instruction | response),
    which is cut at the start so the instruction stays; each ratio then compares the *same number*
    of scored tokens (the first k of each side).

Verdict
    ``passed`` iff every configured bound holds; lower bounds are inclusive, upper bounds exclusive:
    ``ifd_min <= ifd < ifd_max`` and ``rifd_min <= rifd < rifd_max``. ``score = 1 - min(ifd, 1)``;
    the rationale records both ratios (``ifd=0.412 rifd=0.881``). A candidate with no instruction
    or no assistant turn fails.

The IFD cut-off: calibrated on the student, not 1
    ``ifd_max = 1.0`` (the default) is only a ceiling: IFD >= 1 means the instruction does not help
    at all. But a student that has learnt the task's *form* finds a response easier after any
    question of that form, so a response under the wrong question still scores below 1: on the
    tiny student IFD tells matched from mismatched pairs almost perfectly (AUROC 0.999) yet 1.0
    keeps 96-100% of the mismatched ones, filtering nothing. The cut-off that means something is
    relative to the student: with ``calibration`` (a JSONL file of trajectories that do answer their
    instructions and that the student was not trained on, e.g. held-out demonstrations) the bound
    becomes ``min(ifd_max, q)``, ``q`` the ``calibration_quantile`` (default 0.95) of their IFD: a
    candidate is dropped when its instruction explains its response less than it does for 95% of
    good pairs. In ``tgrs run`` a teacher with ``model = "{student}"`` and no ``calibration`` is
    calibrated each round on clean demonstrations of fresh built-in tasks (apart from both splits).
    Measured by ``benchmarks/bench_local_teachers.py --only-ifd`` (the demo's warm-started tiny
    student; 128 held-out demonstrations, and the same responses under another task's question):
    IFD AUROC 1.000; the calibrated cut-off (0.217) drops 100% of the mismatched pairs and 10.9% of
    the matched ones; ``ifd_max = 1`` alone drops 0% of either. A briefly trained student separates
    the pairs less well (AUROC ~0.8 in tests/teachers/test_student_compat.py), and the same rule
    then keeps ~90% of matched pairs while dropping a third of the mismatched ones.

What r-IFD measures
    r-IFD asks whether the student can *write the instruction back* from the response. That needs a
    student that follows a "guess the instruction" request; the tiny student never saw one, and its
    r-IFD carries no signal about mismatched pairs (AUROC 0.52 with the short prompt, 0.55 with the
    default one, in the same benchmark). Use ``rifd_*`` bounds only with an
    instruction-tuned student, and check its AUROC first.

Concurrent ``judge`` calls go through a :class:`~tgrs_agents.teachers.batching.MicroBatcher`: one batch of
candidates = four sequences each, sorted by length and run through the model in chunks, in a
worker thread. Not paid; ``cost_rank`` defaults to 2 (after the reward model, before API judges).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field, ValidationError, model_validator

from ..chat import RIFD, content_text, has_generation_markers, render, template_messages
from ..errors import ConfigError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig
from .batching import MicroBatcher
from .loading import ModelRef, load_model, require_gguf, resolve_model_ref, torch_device

RIFD_PROMPT = (
    "Below is the response to an instruction, please guess the corresponding instruction for the "
    "given response.\n{response}\nGenerate the instruction for the above response."
)
EMPTY: list[dict[str, Any]] = [{"role": "user", "content": ""}]  # "no instruction", in chat form


@dataclass(frozen=True, slots=True)
class CompatScores:
    """The student's view of one candidate. NLLs are mean negative log-likelihoods (nats/token)."""

    ifd: float | None = None
    rifd: float | None = None
    nll_response: float | None = None  # response tokens given the instruction
    nll_response_alone: float | None = None
    nll_instruction: float | None = None  # instruction tokens given the response (r-IFD numerator)
    nll_instruction_alone: float | None = None
    response_tokens: int = 0  # scored tokens on each side of IFD
    instruction_tokens: int = 0  # scored tokens on each side of r-IFD
    error: str | None = None  # why nothing could be scored

    def describe(self) -> str:
        if self.error is not None:
            return self.error
        parts = [f"ifd={self.ifd:.4g}"]
        if self.rifd is not None:
            parts.append(f"rifd={self.rifd:.4g}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v)
                for k in self.__slots__ if (v := getattr(self, k)) is not None}


@dataclass(frozen=True, slots=True)
class Bounds:
    """Where a candidate must lie: ``*_min <= value < *_max`` for every bound that is set."""

    ifd_min: float | None = None
    ifd_max: float | None = 1.0
    rifd_min: float | None = None
    rifd_max: float | None = None

    def violation(self, s: CompatScores) -> str | None:
        """None if ``s`` is inside every bound, else the first bound it breaks."""
        if s.error is not None:
            return s.error
        for name, value in (("ifd", s.ifd), ("rifd", s.rifd)):
            lo, hi = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if lo is None and hi is None:
                continue
            if value is None:
                return f"{name} not computed"
            if lo is not None and not value >= lo:
                return f"{name}={value:.4g} < {name}_min {lo:g}"
            if hi is not None and not value < hi:
                return f"{name}={value:.4g} >= {name}_max {hi:g}"
        return None


def split_instruction(candidate: Candidate) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(instruction messages, response messages): split at the first assistant message."""
    msgs = [m.model_dump(mode="json", exclude_none=True) for m in candidate.messages]
    k = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
    return msgs[:k], msgs[k:]


def instruction_text(instruction: Sequence[dict[str, Any]]) -> str:
    return "\n\n".join(t for m in instruction if (t := content_text(m.get("content"))))


def transcript(response: Sequence[dict[str, Any]]) -> str:
    """A plain-text view of the response for the r-IFD prompt (:data:`tgrs_agents.chat.RIFD`)."""
    return render(response, RIFD)


@dataclass(slots=True)
class _Seq:
    ids: list[int]
    scored: list[int]  # positions whose token is scored (each predicted from the one before)


class StudentScorer:
    """IFD and r-IFD of candidates under one causal LM; :meth:`score_batch` is synchronous."""

    def __init__(self, model: Any, tokenizer: Any, *, device: str = "cpu", max_length: int | None = None,
                 rifd_prompt: str = RIFD_PROMPT, rifd: bool = True, forward_batch_size: int = 32) -> None:
        if "{response}" not in rifd_prompt:
            raise ValueError("rifd_prompt must contain '{response}'")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        positions = getattr(model.config, "max_position_embeddings", None)
        self.max_length = int(max_length or min(positions or 4096, 4096))
        self.rifd_prompt = rifd_prompt
        self.rifd = rifd
        self.forward_batch_size = forward_batch_size
        self.masked = has_generation_markers(getattr(tokenizer, "chat_template", None))
        pad = tokenizer.pad_token_id
        pad = pad if pad is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

    @classmethod
    def load(cls, path: str | Path | ModelRef, *, device: str = "auto", base_dir: Path | None = None,
             **kw: Any) -> StudentScorer:
        """The scorer over a checkpoint directory, a Hub name, a ``.gguf`` file or ``gguf:PACKAGE``
        (:func:`~tgrs_agents.teachers.loading.load_model`)."""
        import torch

        dev = torch_device(device)
        if dev == "cpu":
            torch.set_flush_denormal(True)
        model, tokenizer = load_model(path, device=dev, base_dir=base_dir)
        return cls(model, tokenizer, device=dev, **kw)

    # ----- rendering ---------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, Any]], tools: Any, context: list[dict[str, Any]] | None,
                *, from_end: bool = False) -> _Seq:
        """Tokens of ``messages`` and the positions scored: assistant tokens (or those after ``context``)."""
        tok = self.tokenizer
        msgs = template_messages(messages)
        if self.masked:
            enc = tok.apply_chat_template(msgs, tools=tools or None, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
            ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        else:
            full = str(tok.apply_chat_template(msgs, tools=tools or None, tokenize=False))
            ids = list(tok(full, add_special_tokens=False)["input_ids"])
            n_ctx = 0
            if context:
                head = str(tok.apply_chat_template(template_messages(context), tools=tools or None,
                                                   tokenize=False, add_generation_prompt=True))
                if full.startswith(head):
                    n_ctx = len(tok(head, add_special_tokens=False)["input_ids"])
            mask = [0] * n_ctx + [1] * (len(ids) - n_ctx)
        if len(ids) > self.max_length:
            cut = slice(len(ids) - self.max_length, None) if from_end else slice(0, self.max_length)
            ids, mask = ids[cut], mask[cut]
        return _Seq(ids, [i for i, m in enumerate(mask) if m and i > 0])

    def sequences(self, c: Candidate) -> list[_Seq] | str:
        """The four sequences of one candidate (two without r-IFD), or why it cannot be scored."""
        instruction, response = split_instruction(c)
        if not instruction:
            return "no instruction before the first assistant turn"
        if not response:
            return "no assistant turn to score"
        seqs = [self._render(instruction + response, c.tools, instruction),
                self._render(EMPTY + response, c.tools, EMPTY)]
        if self.rifd:
            q = [{"role": "assistant", "content": instruction_text(instruction)}]
            ask = [{"role": "user", "content": self.rifd_prompt.replace("{response}", transcript(response))}]
            seqs += [self._render(ask + q, None, ask, from_end=True), self._render(EMPTY + q, None, EMPTY)]
        for a, b in zip(seqs[::2], seqs[1::2], strict=True):  # compare the same number of tokens
            k = min(len(a.scored), len(b.scored))
            if k == 0:
                return "no tokens to score within max_length"
            a.scored, b.scored = a.scored[:k], b.scored[:k]
        return seqs

    # ----- the batch ---------------------------------------------------------------------------
    def mean_nll(self, seqs: list[_Seq]) -> list[float]:
        """Mean NLL (nats) of each sequence's scored tokens; sorted by length, chunked, right padded."""
        import torch
        import torch.nn.functional as F

        out = [0.0] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
        for start in range(0, len(order), self.forward_batch_size):
            chunk = order[start:start + self.forward_batch_size]
            width = max(len(seqs[i].ids) for i in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            weight = torch.zeros((len(chunk), width - 1))
            for r, i in enumerate(chunk):
                s = seqs[i]
                ids[r, :len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
                attn[r, :len(s.ids)] = 1
                weight[r, [p - 1 for p in s.scored]] = 1.0
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device),
                                    use_cache=False).logits
                nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(self.device),
                                      reduction="none").cpu()
            per_row = (nll * weight).sum(1) / weight.sum(1)
            for r, i in enumerate(chunk):
                out[i] = float(per_row[r])
        return out

    def score_batch(self, candidates: list[Candidate], *, rifd: bool | None = None) -> list[CompatScores]:
        """Scores of ``candidates`` in order; ``rifd=False`` skips r-IFD for this call."""
        if rifd is not None and rifd != self.rifd:
            saved, self.rifd = self.rifd, rifd
            try:
                return self.score_batch(candidates)
            finally:
                self.rifd = saved
        built = [self.sequences(c) for c in candidates]
        flat = [s for b in built if not isinstance(b, str) for s in b]
        nlls = iter(self.mean_nll(flat)) if flat else iter(())
        out = []
        for b in built:
            if isinstance(b, str):
                out.append(CompatScores(error=b))
                continue
            a, alone = next(nlls), next(nlls)
            kw: dict[str, Any] = {"ifd": math.exp(a - alone), "nll_response": a, "nll_response_alone": alone,
                                  "response_tokens": len(b[0].scored)}
            if self.rifd:
                q, q_alone = next(nlls), next(nlls)
                kw.update(rifd=math.exp(q - q_alone), nll_instruction=q, nll_instruction_alone=q_alone,
                          instruction_tokens=len(b[2].scored))
            out.append(CompatScores(**kw))
        return out


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ``values``, linearly interpolated between order statistics (None if empty)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class StudentCompatConfig(TeacherConfig):
    OPERATIONAL: ClassVar[frozenset[str]] = TeacherConfig.OPERATIONAL | {
        "max_batch_size", "max_wait_ms", "device"}
    kind: Literal["student_compat"] = "student_compat"
    model: str = Field(min_length=1)  # the current student: a directory or a Hub name
    ifd_max: float | None = Field(1.0, gt=0)  # a ceiling; the calibrated cut-off is usually below it
    calibration: str | None = None  # JSONL of matched trajectories the student did not train on
    calibration_quantile: float = Field(0.95, gt=0, le=1)
    ifd_min: float | None = Field(None, ge=0)
    rifd_min: float | None = Field(None, ge=0)
    rifd_max: float | None = Field(None, gt=0)
    compute_rifd: bool = True
    rifd_prompt: str = RIFD_PROMPT
    max_length: int | None = Field(None, ge=8)
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cost_rank: int = 2

    @model_validator(mode="after")
    def _bounds(self) -> StudentCompatConfig:
        for name in ("ifd", "rifd"):
            lo, hi = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if lo is not None and hi is not None and not lo < hi:
                raise ValueError(f"expected {name}_min < {name}_max; got {lo} and {hi}")
        if not self.compute_rifd and (self.rifd_min is not None or self.rifd_max is not None):
            raise ValueError("rifd_min / rifd_max need compute_rifd = true")
        if "{response}" not in self.rifd_prompt:
            raise ValueError("rifd_prompt must contain '{response}'")
        return self

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.ifd_min, self.ifd_max, self.rifd_min, self.rifd_max)


class StudentCompatTeacher(Teacher):
    Config = StudentCompatConfig
    config: StudentCompatConfig

    def __init__(self, config: StudentCompatConfig, ctx: BuildContext | None = None, *,
                 scorer: StudentScorer | None = None) -> None:
        super().__init__(config, ctx)
        if scorer is None:
            ref = resolve_model_ref(config.model, self.ctx.base_dir, file=self.ctx.source, field="model")
            require_gguf(ref, file=self.ctx.source)
            try:
                scorer = StudentScorer.load(ref, device=config.device, max_length=config.max_length,
                                            rifd_prompt=config.rifd_prompt, rifd=config.compute_rifd)
            except OSError as e:
                raise ConfigError(f"cannot load student {config.model!r}: {e}",
                                  file=self.ctx.source, field="model") from None
        self.scorer = scorer
        self.bounds = config.bounds
        self.calibrated: tuple[float, int] | None = None  # (cut-off, demonstrations scored)
        if config.calibration is not None:
            demos = self._calibration_set(config.calibration)
            cut = quantile([s.ifd for s in scorer.score_batch(demos, rifd=False) if s.ifd is not None],
                           config.calibration_quantile)
            if cut is not None:
                self.calibrated = (cut, len(demos))
                self.bounds = replace(self.bounds, ifd_max=cut if config.ifd_max is None else min(cut, config.ifd_max))
        self.batcher: MicroBatcher[Candidate, CompatScores] = MicroBatcher(
            scorer.score_batch, max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
            name=f"compat-{config.name}")

    async def scores(self, candidate: Candidate) -> CompatScores:
        """IFD and r-IFD of one candidate (batched with concurrent calls)."""
        return await self.batcher.submit(candidate)

    def _calibration_set(self, name: str) -> list[Candidate]:
        p = Path(name).expanduser()
        path = p if p.is_absolute() else self.ctx.base_dir / p
        field = f"teacher.{self.config.name}.calibration"
        if not path.is_file():
            raise ConfigError(f"calibration file not found: {path}", file=self.ctx.source, field=field)
        out = []
        for line, raw in enumerate(path.read_bytes().splitlines(), 1):
            if raw.strip():
                try:
                    out.append(Candidate.model_validate(orjson.loads(raw)))
                except (orjson.JSONDecodeError, ValidationError) as e:
                    raise ConfigError(f"{path} line {line}: not a trajectory ({str(e).splitlines()[0]})",
                                      file=self.ctx.source, field=field) from None
        if not out:
            raise ConfigError(f"no trajectories in {path}", file=self.ctx.source, field=field)
        return out

    async def judge(self, candidate: Candidate) -> Verdict:
        s = await self.scores(candidate)
        if s.error is not None:
            return self.verdict(False, 0.0, s.error)
        why = self.bounds.violation(s)
        assert s.ifd is not None
        score = 1.0 - min(s.ifd, 1.0)
        return self.verdict(why is None, score, s.describe() + (f": {why}" if why else ""))

    async def aclose(self) -> None:
        await self.batcher.aclose()

