"""Where run directories keep their files, written down once.

A ``tgrs curate`` run directory, and a ``tgrs run`` directory whose rounds each hold one::

    CURATE/                        (tgrs curate; tgrs_agents.curation.store writes it)
        config.toml  run.json      the resolved panel; input and panel fingerprints
        events.jsonl verdicts.jsonl accepted.jsonl rejected.jsonl passed.jsonl invalid.jsonl
        summary.json finalize.json counts and figures; best_k's finishing step

    LOOP/                          (tgrs run; tgrs_agents.loop.rounds writes it)
        run.json                   the arm and the resolved config's fingerprint (tgrs_agents.loop.fingerprint)
        summary.json               per-round pass@1, pass@k (with standard errors), acceptance, tokens/s, wall time
        archive-STAMP/             an earlier run moved aside by --force
        round-0/init/ seed.jsonl   the tiny student before and the seed data of its warm start
        round-K/model/             the student after round K (round 0: warm-started, or the base model)
        round-K/candidates.jsonl   N rollouts per training task from round K-1's student
        round-K/curate/            the panel's run directory (a CURATE above)
        round-K/accepted.jsonl     (--accept-all) every candidate, unjudged
        round-K/refine/            refine.jsonl (every choice) and refined.jsonl (what the pool gets)
        round-K/set_aside.jsonl    accepted records the data filters set aside, with the reason
        round-K/calibration.jsonl  held-out demonstrations a student_compat teacher calibrates its IFD cut-off on
        round-K/pool.jsonl         accepted data pooled over rounds (tgrs_agents.loop.pool), what SFT reads
        round-K/eval.jsonl         per held-out task: samples, correct, pass@1, pass@k of round K's student
        round-K/<stage>.done.json  a finished stage's figures; a re-run skips finished stages

The loop's layout lives here, beside the curate run's, because ``curate/`` is the lowest layer that
knows run directories and both readers sit above it: ``report/`` (which finds a loop's curate
runs) and ``loop/`` (which writes them).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CurateDir:
    """The files of one curate run."""

    dir: Path

    def jsonl(self, name: str) -> Path:
        """``events``, ``verdicts``, ``accepted``, ``rejected``, ``passed`` or ``invalid``."""
        return self.dir / f"{name}.jsonl"

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def meta(self) -> Path:
        return self.dir / "run.json"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def finalize(self) -> Path:
        return self.dir / "finalize.json"


@dataclass(frozen=True, slots=True)
class RoundDir:
    """The files of round ``k`` of an expert-iteration run."""

    dir: Path

    @property
    def curate(self) -> CurateDir:
        return CurateDir(self.dir / "curate")

    def file(self, relative: str) -> Path:
        """A file named relative to the round (a stage's ``accepted_file``)."""
        return self.dir / relative

    def done(self, stage: str) -> Path:
        return self.dir / f"{stage}.done.json"

    # the accepted data of a round, as a path relative to the round directory, by the stage that wrote it
    CURATE_ACCEPTED = "curate/accepted.jsonl"
    ALL_ACCEPTED = "accepted.jsonl"  # --accept-all
    REFINED = "refine/refined.jsonl"

    @property
    def candidates(self) -> Path:
        return self.dir / "candidates.jsonl"

    @property
    def refine(self) -> Path:
        return self.dir / "refine"

    @property
    def set_aside(self) -> Path:
        return self.dir / "set_aside.jsonl"

    @property
    def pool(self) -> Path:
        return self.dir / "pool.jsonl"

    @property
    def model(self) -> Path:
        return self.dir / "model"

    @property
    def eval_results(self) -> Path:
        """One line per held-out task: ``task_id``, ``samples``, ``correct``, ``pass@1``, ``pass@k``."""
        return self.dir / "eval.jsonl"

    @property
    def calibration(self) -> Path:
        return self.dir / "calibration.jsonl"

    @property
    def init(self) -> Path:
        return self.dir / "init"

    @property
    def seed(self) -> Path:
        return self.dir / "seed.jsonl"


@dataclass(frozen=True, slots=True)
class LoopDir:
    """The files of an expert-iteration run."""

    dir: Path

    @property
    def summary(self) -> Path:
        return self.dir / "summary.json"

    @property
    def meta(self) -> Path:
        """``run.json``: the arm and the fingerprint of the config that made this run."""
        return self.dir / "run.json"

    def round(self, k: int) -> RoundDir:
        return RoundDir(self.dir / f"round-{k}")

    def curated_rounds(self) -> list[int]:
        """The rounds whose curate run directory exists, in order."""
        out = []
        for p in self.dir.glob("round-*/curate"):
            k = p.parent.name.split("-", 1)[1]
            if k.isdigit() and p.is_dir():
                out.append(int(k))
        return sorted(out)

    def rounds(self) -> list[int]:
        """The rounds whose directory exists, in order."""
        return sorted(int(k) for p in self.dir.glob("round-*")
                      if p.is_dir() and (k := p.name.split("-", 1)[1]).isdigit())

    def archive(self) -> Path:
        """Move everything in the run directory (but earlier archives) to a new ``archive-STAMP/``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest, n = self.dir / f"archive-{stamp}", 1
        while dest.exists():  # two --force runs in one second
            n += 1
            dest = self.dir / f"archive-{stamp}-{n}"
        dest.mkdir()
        for p in self.dir.iterdir():
            if p != dest and not p.name.startswith("archive-") and p.name != ".lock":  # held by this run
                shutil.move(str(p), dest / p.name)
        return dest
