"""The loop's training stages, as a part of :class:`~tgrs_agents.loop.rounds.ExpertIteration`.

``pool`` puts the round's accepted data through the filters and pools it with the earlier rounds'
(:mod:`tgrs_agents.loop.pool`); ``sft`` fine-tunes round K-1's student on the pool
(:mod:`tgrs_agents.loop.distill`; an empty pool carries the student over); ``pairs`` and ``dpo`` make
preference pairs from the round's judged candidates and train on them (:mod:`tgrs_agents.loop.preference`).
Each reads and writes files of the run directory only, so a multi-GPU trainer can stand in for one
(``docs/scale.md``: override :meth:`TrainStages.sft`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..curation.layout import LoopDir
from ..curation.store import iter_jsonl
from .config import LoopConfig
from .pool import pool_round
from .stages import Paired, Pooled, Preferred, Trained


class TrainStages:
    """pool -> sft, and pairs -> dpo; :class:`~tgrs_agents.loop.rounds.ExpertIteration` holds the state."""

    cfg: LoopConfig
    layout: LoopDir
    accept_all: bool

    if TYPE_CHECKING:  # ExpertIteration's
        def model_dir(self, rnd: int) -> Path: ...

    def sft_dir(self, rnd: int) -> Path:
        """Where round ``rnd``'s SFT result is: the round's student, or with ``sft+dpo`` DPO's start
        (``round-K/sft-model``; the previous student when SFT had nothing to train on)."""
        if self.cfg.train.method == "sft":
            return self.model_dir(rnd)
        rd = self.layout.round(rnd)
        out = rd.dir / "sft-model"
        if not out.exists() and rd.done("sft").exists():
            if json.loads(rd.done("sft").read_text()).get("carried_over"):
                return self.model_dir(rnd - 1)
        return out

    def dpo_start(self, rnd: int) -> Path:
        """The model round ``rnd``'s DPO starts from, which is also its reference (tgrs_agents.loop.preference)."""
        return self.sft_dir(rnd) if self.cfg.train.method == "sft+dpo" else self.model_dir(rnd - 1)

    def pool(self, rnd: int, accepted_file: str) -> Pooled:
        """This round's accepted data through the filters, pooled with the previous rounds' pool (the
        accept-all control pools every row, blind to content: see tgrs_agents.loop.pool)."""
        def tokenizer() -> Any:  # length bounds count the student's own tokens
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.model_dir(rnd - 1))

        return pool_round(self.layout, rnd, accepted_file, self.cfg.filters, self.cfg.pool_cap_per_task,
                          tokenizer=tokenizer, mode="all" if self.accept_all else self.cfg.pool_mode)

    def sft(self, rnd: int) -> Trained:
        """Fine-tune round ``rnd - 1``'s student on the pool; an empty pool carries the student over."""
        from .distill import distill

        if not any(True for _ in iter_jsonl(self.layout.round(rnd).pool)):
            return Trained(sft_tokens_per_s=0.0, sft_backend="none", sft_rows=0, sft_train_s=0.0,
                           final_loss=None, carried_over=True)
        res = distill(self.model_dir(rnd - 1), self.layout.round(rnd).pool, self.sft_dir(rnd),
                      self.cfg.sft.settings(seed=self.cfg.seed + rnd))
        return Trained(sft_tokens_per_s=round(res.tokens_per_s, 1), sft_backend=res.backend, sft_rows=res.rows,
                       sft_train_s=round(res.train_seconds, 2), final_loss=res.losses[-1] if res.losses else None)

    def pairs(self, rnd: int) -> Paired:
        """Preference pairs from the round's judged candidates to ``round-K/pairs.jsonl``."""
        from .preference import make_pairs

        rd = self.layout.round(rnd)
        return Paired(counts=make_pairs(rd.curate.dir, rd.file("pairs.jsonl"), self.cfg.train.pair_settings()))

    def dpo(self, rnd: int, paired: Paired) -> Preferred:
        """DPO on the round's pairs from :meth:`dpo_start`; no pairs carries that model over."""
        from .preference import prefer

        if paired.pairs == 0:
            return Preferred(pairs=0, train_s=0.0, final_loss=None, carried_over=True)
        res = prefer(self.dpo_start(rnd), self.layout.round(rnd).file(paired.pairs_file), self.model_dir(rnd),
                     self.cfg.train.settings(seed=self.cfg.seed + rnd, lora_r=self.cfg.sft.lora_r))
        return Preferred(pairs=res.pairs, train_s=round(res.train_seconds, 2),
                         final_loss=res.losses[-1] if res.losses else None, reward_accuracy=res.reward_accuracy,
                         reward_margin=res.reward_margin)

