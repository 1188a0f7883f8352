"""``tgrs run CONFIG.toml``: the expert-iteration loop's configuration (small frozen models).

```toml
rounds = 3
[student]            # "tiny" builds the embedded default; else a local path or a hub name
model = "tiny"
[tasks]              # "arithmetic" (built in) or a JSONL file of tasks
source = "arithmetic"
[generate]
n = 8
[panel]              # a panel file; relative paths resolve against this config file
file = "teachers/panel-verifiers.toml"
[sft]
steps = 100
lora_r = 8           # optional: train LoRA adapters of this rank (merged into the weights after each round)
[train]              # optional: "sft" (default), "dpo" (preference pairs from the panel) or "sft+dpo"
method = "sft"
```

Student backends: ``transformers`` (default) and ``vllm`` load the model named by ``model`` and the
loop fine-tunes it. ``openai`` samples from a model served behind any OpenAI-compatible endpoint
(``base_url``; the key is read from the environment variable ``api_key_env``, ``""`` for a server
that takes none), through the run's paid-call services (limiter, retries, budget; set
``price_input_per_mtok`` / ``price_output_per_mtok`` for a model without a list price, 0 for a
self-hosted one). A served model cannot be fine-tuned from here, so ``openai`` needs
``rounds = 0``: the run measures the served model's pass@1 / pass@k on the held-out split (a
baseline for the loop's students), and any ``rounds >= 1`` is a ConfigError. To distil from a served
model instead, name it in ``[generator]`` (:class:`GeneratorConfig`): it samples each round's candidates
and the local student learns from what the panel accepts.

Every mistake is a :class:`~tgrs_agents.errors.ConfigError` naming the file and the field.

A run directory remembers the config that made it (:mod:`tgrs_agents.loop.fingerprint`) and refuses
another one. Fields named in a section's ``OPERATIONAL`` change how the run goes, not what it
produces (batch sizes for generation, devices, where keys live, prices, how many rounds to go), so
they stay out of that fingerprint: changing them resumes the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..curation.panel_file import pydantic_problem, read_toml
from ..errors import ConfigError
from ..export.pairs import PairSettings
from .distill import LoraSettings, SFTSettings
from .preference import DPOSettings


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset()  # fields that do not change results


class StudentConfig(_Frozen):
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({
        "device", "api_key_env", "price_input_per_mtok", "price_output_per_mtok"})
    model: str = "tiny"  # "tiny" | local path | hub name | (openai) the served model's name
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    device: str | None = None  # None: cuda if available else cpu
    base_url: str | None = None  # openai: the endpoint (None: api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"  # openai: the variable holding the key; "" for a server without keys
    price_input_per_mtok: float | None = Field(None, ge=0)  # openai: USD per million tokens (None: list price)
    price_output_per_mtok: float | None = Field(None, ge=0)


class TasksConfig(_Frozen):
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"allow_overlap"})
    source: str = "arithmetic"  # "arithmetic" | "code" | "instructions" (built in) | a JSONL task file
    eval_source: str | None = None
    tools: str | None = None  # "module:fn" | "file.py:fn": a tool factory (None: the family's; files: calculator)
    tool_timeout_s: float = Field(10.0, gt=0)  # per tool call
    n_train: int = Field(192, ge=1)
    n_eval: int = Field(128, ge=1)
    n_ops: int = Field(2, ge=1, le=4)
    seed: int = 0
    allow_overlap: bool = False  # else a held-out task that is also a training task is a ConfigError


class GenerateConfig(_Frozen):
    # engine, workers: like batch_size, the same distribution with other draws (tgrs_agents.loop.ray_rollouts)
    # stream, chunk_tasks: when the panel sees the candidates, and the chunks they are sampled in
    # (tgrs_agents.loop.stream; a chunk's draws depend on its index)
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"batch_size", "engine", "workers", "stream", "chunk_tasks"})
    n: int = Field(8, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(40, ge=1)
    max_turns: int = Field(3, ge=1)
    max_tokens: int = Field(120, ge=1)
    batch_size: int = Field(768, ge=1)
    engine: Literal["local", "ray"] = "local"  # ray: tasks split over Ray workers, a model replica each
    workers: int = Field(2, ge=1)  # with engine = "ray" (RAY_ADDRESS: join that cluster)
    stream: bool = True  # the panel judges each chunk of rollouts as it is written (false: after the round)
    chunk_tasks: int | None = Field(None, ge=1)  # tasks per chunk (None: a sixteenth of the round)


class PanelRef(_Frozen):
    file: str = "teachers/panel-verifiers.toml"


class EvalSection(_Frozen):
    """``[eval]``: the panel whose decisions are pass@1 / pass@k (None: the family's own; a task
    file's: the final_answer check), see tgrs_agents.loop.evaluate."""

    panel: str | None = None


class SFTSection(_Frozen):
    """``[sft]``: each round's fine-tuning step (:class:`~tgrs_agents.loop.distill.SFTSettings`)."""

    steps: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-4, gt=0)
    backend: Literal["auto", "trl", "torch"] = "auto"
    lora_r: int | None = Field(None, ge=1)  # LoRA rank (alpha = 2 * rank); None: full fine-tuning
    max_length: int = Field(128, ge=8)  # tokens kept per row (its start): a real model's tool rows need ~1024

    def settings(self, seed: int) -> SFTSettings:
        lora = None if self.lora_r is None else LoraSettings(r=self.lora_r, alpha=2 * self.lora_r)
        return SFTSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=seed,
                           backend=self.backend, lora=lora, max_length=self.max_length)


class TrainSection(_Frozen):
    """``[train]``: how a round folds the panel's judgement back (:mod:`tgrs_agents.loop.preference`):
    ``sft`` on the pool, ``dpo`` on preference pairs of the round's judged candidates, or ``sft+dpo``
    (SFT, then DPO from its result). The DPO knobs use ``[sft] lora_r`` for LoRA, as SFT does."""

    method: Literal["sft", "dpo", "sft+dpo"] = "sft"
    # hard: best accepted vs the near miss (export.pairs); the default pairs are easy negatives that DPO
    # over-fits (benchmarks/bench_train_method.py, README "Training method")
    pairs: Literal["accepted-rejected", "best-worst", "all", "hard"] = "hard"
    pairs_per_task: int | None = Field(1, ge=1)  # None: no cap
    min_margin: float = Field(0.0, ge=0, le=1)  # panel-score margin a pair needs
    steps: int = Field(10, ge=1)  # DPO optimizer steps per round: ~2 epochs over ~80 pairs at batch 16
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)

    def pair_settings(self) -> PairSettings:
        return PairSettings(mode=self.pairs, pairs_per_task=self.pairs_per_task, min_margin=self.min_margin)

    def settings(self, seed: int, lora_r: int | None) -> DPOSettings:
        lora = None if lora_r is None else LoraSettings(r=lora_r, alpha=2 * lora_r)
        return DPOSettings(steps=self.steps, batch_size=self.batch_size, lr=self.lr, beta=self.beta, seed=seed,
                           lora=lora)


class WarmStartConfig(_Frozen):
    file: str | None = None  # JSONL of right trajectories for a task file's tasks (None: the family's demonstrations)
    n_seed: int = Field(300, ge=1)
    noise: float = Field(0.3, ge=0, le=1)
    steps: int = Field(200, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)


class FiltersConfig(_Frozen):
    """Data filters on each round's accepted data (see tgrs_agents.loop.filters); all off by default."""

    difficulty_lo: float | None = Field(None, ge=0, le=1)  # keep tasks with pass rate in [lo, hi] ...
    difficulty_hi: float = Field(1.0, ge=0, le=1)
    keep_extremes: bool = False  # ... and, unless this, drop never- and always-solved tasks
    min_response_tokens: int | None = Field(None, ge=0)
    max_response_tokens: int | None = Field(None, ge=1)
    near_dup_threshold: float | None = Field(None, gt=0, le=1)


class RefineConfig(_Frozen):
    """Optional refine stage: a teacher rewrites accepted data, the student picks by IFD / r-IFD."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({
        "api_key_env", "price_input_per_mtok", "price_output_per_mtok"})
    model: str | None = None  # an OpenAI-compatible chat model; None: no refine stage
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    target: Literal["response", "instruction", "both"] = "response"
    price_input_per_mtok: float | None = Field(None, ge=0)  # USD per million tokens; unset: list price
    price_output_per_mtok: float | None = Field(None, ge=0)


class GeneratorConfig(_Frozen):
    """``[generator]``: a served model samples each round's candidates in the student's place (plain
    distillation from a strong teacher). The panel judges what it wrote, the local student is trained
    on what the panel keeps, and pass@k stays the student's. Every call crosses the run's paid-call
    services, as a judge's does (limiter per endpoint, retries, budget, cost); see
    tgrs_agents.loop.sampling."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({
        "api_key_env", "price_input_per_mtok", "price_output_per_mtok", "rpm", "tpm", "max_concurrency"})
    backend: Literal["openai"] = "openai"  # any OpenAI-compatible chat endpoint
    model: str  # the served model's name
    base_url: str | None = None  # None: api.openai.com
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; "" for a server without keys
    price_input_per_mtok: float | None = Field(None, ge=0)  # USD per million tokens (None: list price)
    price_output_per_mtok: float | None = Field(None, ge=0)
    rpm: float | None = Field(None, gt=0)  # the endpoint's limits, when known (else learned from its headers)
    tpm: float | None = Field(None, gt=0)
    max_concurrency: int = Field(256, ge=1)
    system: str | None = None  # instructions for the generator alone (e.g. the answer format), kept out of
    #   the candidates: the student learns to answer without them


class BudgetConfig(_Frozen):
    """``[budget]``: what a ``tgrs run`` may pay for in all (judges, refiner, a served student or
    ``[generator]``, every round and invocation; see tgrs_agents.loop.budget). Operational: the whole
    section stays out of the run's fingerprint, so a run its budget stopped resumes with a larger one."""

    usd: float | None = Field(None, ge=0)  # None: no cap


class LoopConfig(_Frozen):
    # rounds: how far to go (finished rounds stay valid); base_dir, source: where the file was
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"rounds", "base_dir", "source", "budget"})
    rounds: int = Field(3, ge=0)  # 0: evaluate the starting student only
    eval_k: int = Field(8, ge=1)
    eval_temperature: float = Field(1.0, ge=0)
    pool_cap_per_task: int = Field(4, ge=1)
    pool_mode: Literal["agree", "distinct"] = "agree"  # see tgrs_agents.loop.pool
    seed: int = 0
    student: StudentConfig = StudentConfig()
    tasks: TasksConfig = TasksConfig()
    generate: GenerateConfig = GenerateConfig()
    panel: PanelRef = PanelRef()
    eval: EvalSection = EvalSection()
    sft: SFTSection = SFTSection()
    train: TrainSection = TrainSection()
    warm_start: WarmStartConfig = WarmStartConfig()
    filters: FiltersConfig = FiltersConfig()
    refine: RefineConfig = RefineConfig()
    generator: GeneratorConfig | None = None  # [generator]: a served model samples the candidates
    budget: BudgetConfig = BudgetConfig()  # operational (see BudgetConfig)
    base_dir: str = "."
    source: str | None = None  # the config file, for error messages (set by load_run_config)

    @model_validator(mode="after")
    def _servable(self) -> LoopConfig:
        if self.student.backend == "openai" and self.rounds > 0:
            raise ConfigError(f"a served model cannot be fine-tuned: backend \"openai\" needs rounds = 0 "
                              f"(evaluate it); got rounds = {self.rounds}. To distil from it, name it in "
                              f"[generator] (backend, model, base_url) and train a local [student]",
                              file=self.source, field="student.backend")
        return self

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p


def load_run_config(path: str | Path, **overrides: Any) -> LoopConfig:
    """Read and validate a run config; ``overrides`` (e.g. ``rounds`` from the command line) replace keys."""
    path = Path(path)
    doc = read_toml(path, what="run config")
    doc.update(overrides)
    doc.setdefault("base_dir", str(path.resolve().parent))
    doc["source"] = str(path)
    try:
        return LoopConfig.model_validate(doc)
    except ValidationError as e:
        loc, msg = pydantic_problem(e, obj="a table")
        raise ConfigError(msg, file=path, field=loc) from None
