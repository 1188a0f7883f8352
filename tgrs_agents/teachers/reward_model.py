"""``kind = "reward_model"``: a local sequence classifier scores the whole trajectory.

Any ``AutoModelForSequenceClassification`` checkpoint works (a local directory or a Hub name):
a trained reward model such as ``Skywork/Skywork-Reward-V2-Qwen3-0.6B``, or the tiny one this
project trains itself (:mod:`tgrs_agents.student.train_reward`).

What the model reads
    The candidate's messages (tool calls and tool results included) rendered with the
    *classifier's own* tokenizer chat template (after :func:`~tgrs_agents.chat.template_messages`,
    so tool-call arguments are mappings), with the candidate's ``tools``. Longer than ``max_length``
    tokens: the *start* is cut, so the final answer is always read. Without a chat template the
    model reads the judges' transcript (``[role] text`` lines, ``[assistant calls name] args`` per
    tool call; :data:`tgrs_agents.chat.JUDGE`).

From logits to a verdict
    ``raw`` is the logit (``num_labels == 1``) or the margin ``logit[1] - logit[0]``
    (``num_labels == 2``; label 1 is "good"). ``score_map = "sigmoid"`` gives ``sigmoid(raw)``,
    which for two labels is exactly the softmax probability of label 1; ``"minmax"`` gives
    ``clip((raw - min) / (max - min), 0, 1)``. ``passed`` is ``score >= threshold``.

Batching
    Concurrent ``judge`` calls go through a :class:`~tgrs_agents.teachers.batching.MicroBatcher` into one
    forward pass per batch (``max_batch_size``, ``max_wait_ms``), in a worker thread. Rows are
    padded on the *right* and ``config.pad_token_id`` is set from the tokenizer (its pad token, or
    eos / unk when it has none), because transformers' sequence classifiers pool the logits of the
    last token that is not ``pad_token_id``; padding therefore never changes a score (the tests
    check batched == one by one).

Not paid, so no limiter, budget, retry or ledger wraps it; ``cost_rank`` defaults to 1 (after
exact verifiers, before API judges). torch and transformers are imported when the teacher is built.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..chat import JUDGE, render, template_messages
from ..errors import ConfigError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig
from .batching import MicroBatcher
from .loading import load_model, load_tokenizer, torch_device

Device = Literal["auto", "cpu", "cuda"]


class RewardModelConfig(TeacherConfig):
    OPERATIONAL: ClassVar[frozenset[str]] = TeacherConfig.OPERATIONAL | {
        "max_batch_size", "max_wait_ms", "device"}
    kind: Literal["reward_model"] = "reward_model"
    model: str = Field(min_length=1)  # a directory (relative to the panel file, then the cwd) or a Hub name
    score_map: Literal["sigmoid", "minmax"] = "sigmoid"
    min: float | None = None  # raw value mapped to 0 (minmax)
    max: float | None = None  # raw value mapped to 1 (minmax)
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_length: int = Field(2048, ge=8)
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    device: Device = "auto"
    cost_rank: int = 1

    @model_validator(mode="after")
    def _minmax(self) -> RewardModelConfig:
        if self.score_map == "minmax":
            if self.min is None or self.max is None:
                raise ValueError("score_map = 'minmax' needs both min and max")
            if not self.min < self.max:
                raise ValueError(f"expected min < max; got min={self.min}, max={self.max}")
        return self


# ----- helpers shared by the local (torch) teachers ---------------------------------------------

def render_conversation(tokenizer: Any, candidate: Candidate) -> str:
    """The trajectory as the tokenizer's chat template writes it; without a template, the judges'
    transcript (:data:`tgrs_agents.chat.JUDGE`: role-tagged lines, tool calls included)."""
    if getattr(tokenizer, "chat_template", None):
        msgs = template_messages(m.model_dump(mode="json", exclude_none=True) for m in candidate.messages)
        return str(tokenizer.apply_chat_template(msgs, tools=candidate.tools or None, tokenize=False))
    return render(candidate.messages, JUDGE)


def map_score(raw: float, score_map: str, lo: float | None = None, hi: float | None = None) -> float:
    """``raw`` (logit or logit margin) -> [0, 1]; see the module docstring."""
    if score_map == "sigmoid":
        if raw >= 0:
            return 1.0 / (1.0 + math.exp(-raw))
        e = math.exp(raw)
        return e / (1.0 + e)
    if score_map == "minmax":
        assert lo is not None and hi is not None
        return min(1.0, max(0.0, (raw - lo) / (hi - lo)))
    raise ValueError(f"unknown score_map {score_map!r}: use 'sigmoid' or 'minmax'")


class RewardModelTeacher(Teacher):
    Config = RewardModelConfig
    config: RewardModelConfig

    def __init__(self, config: RewardModelConfig, ctx: BuildContext | None = None, *,
                 model: Any = None, tokenizer: Any = None) -> None:
        super().__init__(config, ctx)
        import torch

        self.device = torch_device(config.device)
        if self.device == "cpu":
            torch.set_flush_denormal(True)
        where: dict[str, Any] = {"base_dir": self.ctx.base_dir, "file": self.ctx.source, "field": "model"}
        if tokenizer is None:
            tokenizer = load_tokenizer(config.model, **where)
        if model is None:
            try:
                model, _ = load_model(config.model, head="sequence_classifier", device=self.device,
                                      tokenizer=False, **where)
            except OSError as e:
                raise ConfigError(f"cannot load reward model {config.model!r}: {e}",
                                  file=self.ctx.source, field="model") from None
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        self.num_labels = int(self.model.config.num_labels)
        if self.num_labels not in (1, 2):
            raise ConfigError(f"expected a classifier with 1 or 2 labels; {config.model!r} has "
                              f"{self.num_labels}", file=self.ctx.source, field="model")
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.unk_token_id
        if pad is None:
            raise ConfigError("the tokenizer has no pad, eos or unk token to pad with",
                              file=self.ctx.source, field="model")
        self.pad_id = int(pad)
        self.model.config.pad_token_id = self.pad_id  # the classifier pools the last non-pad token
        self.batcher: MicroBatcher[Candidate, float] = MicroBatcher(
            self.raw_scores, max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
            name=f"rm-{config.name}")

    # ----- scoring (worker thread) -------------------------------------------------------------
    def encode(self, candidate: Candidate) -> list[int]:
        text = render_conversation(self.tokenizer, candidate)
        ids = list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        return ids[-self.config.max_length:]  # keep the end: the final answer decides

    def raw_scores(self, candidates: list[Candidate]) -> list[float]:
        """One forward pass over ``candidates``, right padded: the raw value of each (see above)."""
        import torch

        rows = [self.encode(c) for c in candidates]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device),
                                attention_mask=mask.to(self.device)).logits.float().cpu()
        raw = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        return [float(x) for x in raw]

    def to_verdict(self, raw: float) -> Verdict:
        c = self.config
        score = map_score(raw, c.score_map, c.min, c.max)
        passed = score >= c.threshold
        return self.verdict(passed, score, f"raw={raw:.4g} score={score:.3f} "
                                           f"{'>=' if passed else '<'} threshold {c.threshold:g}")

    # ----- the teacher -------------------------------------------------------------------------
    async def judge(self, candidate: Candidate) -> Verdict:
        return self.to_verdict(await self.batcher.submit(candidate))

    async def aclose(self) -> None:
        await self.batcher.aclose()
