"""A judge with a known error rate: the true verdict, flipped for a seeded share of candidates.

Real panels are imperfect; to measure what the pipeline does with one (how precise the kept set is,
whether pooling keeps that precision, whether the student still improves), the experiment needs
judges whose error rate is known. :class:`NoisyJudge` is a ``kind = "python"`` function: it checks
the candidate's final answer against its ``reference`` (the ``final_answer`` teacher's rule) and
flips the verdict when a hash of (``seed``, candidate id) falls below ``flip``. The flips are
independent across candidates and across judges with different seeds, and the same on every run.

:func:`write_noisy_panel` writes such a panel (and its ``judges.py``) in one call; by hand, put the
instances into a file beside the panel::

    # judges.py
    from tgrs_agents.tasks.noisy import NoisyJudge
    a, b, c = (NoisyJudge(flip=0.25, seed=s) for s in (1, 2, 3))

    # panel.toml
    policy = "majority"
    [[teacher]]
    name = "a"
    kind = "python"
    function = "judges.py:a"
    ...
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher, extract_answer
from ..types import Candidate


@functools.cache
def _rule() -> FinalAnswerTeacher:
    return FinalAnswerTeacher(FinalAnswerConfig(name="truth", kind="final_answer"))


def answer_correct(candidate: Candidate) -> bool:
    """The final answer (after the last ``Answer:``) matches the reference (False without either)."""
    answer = extract_answer(candidate.final_text)
    if answer is None or candidate.reference is None:
        return False
    return bool(_rule().matches(answer, candidate.reference))


def unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and ``key``."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(frozen=True)
class NoisyJudge:
    """The true verdict, flipped for a share ``flip`` of candidates (chosen by ``seed``)."""

    flip: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"expected 0 <= flip <= 1; got {self.flip}")

    def flipped(self, candidate: Candidate) -> bool:
        return unit(self.seed, candidate.id) < self.flip

    def __call__(self, candidate: Candidate) -> tuple[bool, str]:
        truth = answer_correct(candidate)
        if self.flipped(candidate):
            return not truth, f"flipped (true verdict {truth})"
        return truth, "true verdict"


def write_noisy_panel(directory: str | Path, *, judges: int = 3, flip: float = 0.25, policy: str = "majority",
                      seed: int = 0) -> Path:
    """``directory/panel.toml``: ``judges`` noisy judges (seeds ``seed + 1`` ...) under ``policy``, and the
    ``judges.py`` they live in. Returns the panel file."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    names = [f"judge_{i}" for i in range(judges)]
    (d / "judges.py").write_text("from tgrs_agents.tasks.noisy import NoisyJudge\n\n" + "".join(
        f"{n} = NoisyJudge(flip={flip!r}, seed={seed + i + 1})\n" for i, n in enumerate(names)))
    teachers = "".join(f'\n[[teacher]]\nname = "{n}"\nkind = "python"\nfunction = "judges.py:{n}"\n'
                       for n in names)
    panel = d / "panel.toml"
    panel.write_text(f'# {judges} judges, each flipping the true verdict for a share {flip} of candidates\n'
                     f'policy = "{policy}"\n{teachers}')
    return panel
