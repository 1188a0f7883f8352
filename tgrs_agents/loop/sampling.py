"""What the loop samples: the task splits, the student's generation backend, and the rollouts.

* :func:`load_tasks`: the built-in arithmetic family, or two JSONL files of tasks (training and
  held-out; every held-out task needs a ``reference``, which evaluation checks answers against).
* :func:`student_backend`: ``[student] backend``: ``transformers`` or ``vllm`` load the round's
  checkpoint; ``openai`` samples from the served model through the run's paid-call services
  (:class:`~tgrs_agents.generate.openai_backend.OpenAIChatBackend`: limiter, retries, budget).
* :func:`rollouts`: ``n`` agent rollouts per task (:func:`tgrs_agents.generate.rollout.rollout`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from ..curate.panel_file import pydantic_problem
from ..errors import ConfigError, InputError
from ..types import Task
from .config import LoopConfig

if TYPE_CHECKING:
    from ..paid.services import Services


def load_tasks(cfg: LoopConfig) -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks)."""
    t = cfg.tasks
    if t.source == "arithmetic":
        from ..tasks.arithmetic import Difficulty, splits

        return splits(t.n_train, t.n_eval, seed=t.seed, d=Difficulty(n_ops=t.n_ops))
    if t.eval_source is None:
        raise ConfigError("a task file needs a held-out task file too", file=cfg.source, field="tasks.eval_source")
    train = read_tasks(cfg, t.source, "tasks.source")[: t.n_train]
    held = read_tasks(cfg, t.eval_source, "tasks.eval_source")[: t.n_eval]
    if unchecked := next((h.id for h in held if h.reference is None), None):
        raise ConfigError(f"held-out task {unchecked!r} has no reference to check answers against",
                          file=cfg.source, field="tasks.eval_source")
    return train, held


def read_tasks(cfg: LoopConfig, name: str, field: str) -> list[Task]:
    """The tasks of a JSONL file named by ``field`` of the config; a bad line is an InputError."""
    path = cfg.resolve(name)
    if not path.is_file():
        raise ConfigError(f"task file not found: {path}", file=cfg.source, field=field)
    tasks = []
    with path.open("rb") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                tasks.append(Task.model_validate(orjson.loads(raw)))
            except orjson.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e})", file=path, line=line) from None
            except ValidationError as e:
                where, what = pydantic_problem(e)
                raise InputError(what, file=path, line=line, field=where) from None
    if not tasks:
        raise ConfigError(f"no tasks in {path}", file=cfg.source, field=field)
    return tasks


def student_backend(cfg: LoopConfig, model_path: Path | str, services: Services) -> Any:
    """The generation backend of the student at ``model_path`` (a served student: its model name)."""
    s = cfg.student
    if s.backend == "openai":
        from ..generate.openai_backend import OpenAIChatBackend

        endpoint: dict[str, Any] = {"base_url": s.base_url} if s.base_url else {}  # else the backend's default
        try:
            return OpenAIChatBackend(s.model, **endpoint, api_key_env=s.api_key_env or None, services=services,
                                     price_input_per_mtok=s.price_input_per_mtok,
                                     price_output_per_mtok=s.price_output_per_mtok)
        except ConfigError as e:
            raise ConfigError(e.detail, file=cfg.source, field="student") from None
    if s.backend == "vllm":
        from ..generate.vllm_backend import VLLMBackend

        return VLLMBackend(str(model_path))
    from ..generate.hf import TransformersBackend

    return TransformersBackend(str(model_path), device=s.device, batch_size=cfg.generate.batch_size)


def rollouts(cfg: LoopConfig, model_path: Path | str, tasks: list[Task], n: int, temperature: float,
             id_prefix: str, services: Services) -> tuple[list[dict[str, Any]], Any]:
    """(trajectories, :class:`~tgrs_agents.generate.rollout.RolloutStats`): ``n`` rollouts per task."""
    from ..generate.base import SamplingParams
    from ..generate.rollout import RolloutStats, rollout
    from ..generate.tools import ToolBox, calculator_tool

    g = cfg.generate
    params = SamplingParams(n=n, temperature=temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                            seed=cfg.seed)

    async def go() -> tuple[list[dict[str, Any]], Any]:
        backend = student_backend(cfg, model_path, services)
        stats = RolloutStats()
        try:
            recs = await rollout(backend, tasks, n=n, toolbox=ToolBox([calculator_tool()]), params=params,
                                 max_turns=g.max_turns, max_tokens=g.max_tokens, id_prefix=id_prefix, stats=stats)
            return recs, stats
        finally:
            await backend.aclose()

    return asyncio.run(go())
