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
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..curate.panel_file import pydantic_problem
from ..errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StudentConfig(_Frozen):
    model: str = "tiny"  # "tiny" | local path | hub name
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    device: str | None = None  # None: cuda if available else cpu
    base_url: str | None = None  # openai backend
    api_key_env: str = "OPENAI_API_KEY"


class TasksConfig(_Frozen):
    source: str = "arithmetic"  # or a JSONL file of tasks (id, messages, tools, reference)
    eval_source: str | None = None
    n_train: int = Field(192, ge=1)
    n_eval: int = Field(128, ge=1)
    n_ops: int = Field(2, ge=1, le=4)
    seed: int = 0


class GenerateConfig(_Frozen):
    n: int = Field(8, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(40, ge=1)
    max_turns: int = Field(3, ge=1)
    max_tokens: int = Field(120, ge=1)
    batch_size: int = Field(768, ge=1)


class PanelRef(_Frozen):
    file: str = "teachers/panel-verifiers.toml"


class SFTConfigModel(_Frozen):
    steps: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(5e-4, gt=0)
    backend: Literal["auto", "trl", "torch"] = "auto"
    lora_r: int | None = Field(None, ge=1)


class WarmStartConfig(_Frozen):
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

    model: str | None = None  # an OpenAI-compatible chat model; None: no refine stage
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    target: Literal["response", "instruction", "both"] = "response"


class LoopConfig(_Frozen):
    rounds: int = Field(3, ge=1)
    eval_k: int = Field(8, ge=1)
    eval_temperature: float = Field(1.0, ge=0)
    pool_cap_per_task: int = Field(4, ge=1)
    seed: int = 0
    student: StudentConfig = StudentConfig()
    tasks: TasksConfig = TasksConfig()
    generate: GenerateConfig = GenerateConfig()
    panel: PanelRef = PanelRef()
    sft: SFTConfigModel = SFTConfigModel()
    warm_start: WarmStartConfig = WarmStartConfig()
    filters: FiltersConfig = FiltersConfig()
    refine: RefineConfig = RefineConfig()
    base_dir: str = "."

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else Path(self.base_dir) / p


def load_run_config(path: str | Path, **overrides: Any) -> LoopConfig:
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError("run config file not found", file=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"expected valid TOML: {e}", file=path) from None
    doc.update(overrides)
    doc.setdefault("base_dir", str(path.resolve().parent))
    try:
        return LoopConfig.model_validate(doc)
    except ValidationError as e:
        loc, msg = pydantic_problem(e)
        raise ConfigError(msg, file=path, field=loc) from None
