"""What the loop samples: the task splits, the student's generation backend, and the rollouts.

* :func:`load_tasks`: a built-in family (``arithmetic``, ``code``, ``instructions``: :mod:`tgrs_agents.tasks.families`),
  or two JSONL files of tasks (training and held-out; without an ``[eval] panel`` every held-out
  task needs a ``reference``, which the final_answer check compares answers with).
  Held-out tasks that are also training tasks are refused (:mod:`tgrs_agents.loop.contamination`)
  unless ``allow_overlap = true``.
* :func:`check_student`: a student that cannot be loaded fails at once, in one line, before any
  stage runs (not after 50 s of hub retries).
* :func:`student_backend`: ``[student] backend``: ``transformers`` or ``vllm`` load the round's
  checkpoint; ``openai`` samples from the served model through the run's paid-call services
  (:class:`~tgrs_agents.generate.openai_backend.OpenAIChatBackend`: limiter, retries, budget).
  With a ``[generator]`` the generate stage passes ``cfg.generator`` in the student's place: a served
  model writes the candidates (through the same services, costed like a judge) while evaluation
  stays on the student (:func:`served_backend` builds both served backends). Its ``system``
  instructions go to the generator alone and are left out of the candidates (:func:`served_record`).
* :func:`tool_factory`: ``[tasks] tools``, the rollouts' tool factory (:mod:`tgrs_agents.tasks.env`):
  a user's, else the family's (a task file's: the calculator, as before). :func:`load_tasks` checks
  it once (it imports, makes tools, and every task's ``tools`` are among them), so a bad one fails
  before any stage, naming the file and field.
* :func:`rollouts`: ``n`` agent rollouts per task (:func:`tgrs_agents.generate.rollouts.rollout`),
  each with fresh tools from the factory.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError

from ..curation.panel_file import pydantic_problem
from ..errors import ConfigError, InputError
from ..teachers.loading import GGUF_PREFIX, resolve_model_ref
from ..types import Message, Task
from .config import GeneratorConfig, LoopConfig, StudentConfig

if TYPE_CHECKING:
    from ..paid.services import Services


def load_tasks(cfg: LoopConfig, log: Callable[[str], None] | None = None) -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks); overlap between them is a ConfigError unless allowed."""
    from ..tasks.env import check_factory
    from ..tasks.families import family
    from .contamination import overlaps, refuse_overlap

    t = cfg.tasks
    lines: dict[str, dict[str, int]] = {}
    if (fam := family(t.source)) is not None:
        try:
            train, held = fam.splits(t.n_train, t.n_eval, seed=t.seed, n_ops=t.n_ops)
        except ValueError as e:
            raise ConfigError(str(e), file=cfg.source, field="tasks.n_train") from None
        names = (f"{t.source} (training split)", f"{t.source} (held-out split)")
    else:
        if t.eval_source is None:
            raise ConfigError("a task file needs a held-out task file too", file=cfg.source,
                              field="tasks.eval_source")
        names = (t.source, t.eval_source)
        train, lines[names[0]] = read_task_lines(cfg, t.source, "tasks.source")
        held, lines[names[1]] = read_task_lines(cfg, t.eval_source, "tasks.eval_source")
        train, held = train[: t.n_train], held[: t.n_eval]
        from .evaluate import eval_panel_path

        unchecked = None if eval_panel_path(cfg) is not None else next(
            (h.id for h in held if h.reference is None), None)
        if unchecked:
            raise ConfigError(f"held-out task {unchecked!r} has no reference to check answers against",
                              file=cfg.source, field="tasks.eval_source")
    found = overlaps(train, held)
    if found and t.allow_overlap:
        if log is not None:
            log(f"[tgrs] warning: {len(found)} of {len(held)} held-out tasks are also training tasks "
                f"(allow_overlap = true)")
    else:
        refuse_overlap(found, len(held), train_file=names[0], held_file=names[1], lines=lines, source=cfg.source)
    if cfg.eval.panel is not None:  # a broken eval panel fails now, not after the warm start
        from .evaluate import load_eval_panel

        load_eval_panel(cfg)
    if t.tools is not None:  # a user's factory: imports, makes tools, and has every tool a task names
        check_factory(tool_factory(cfg), [*train, *held], source=cfg.source)
    return train, held


def tool_factory(cfg: LoopConfig) -> Any:
    """The rollouts' :class:`~tgrs_agents.tasks.env.ToolFactory` (see the module docstring)."""
    from ..tasks.env import load_tool_factory
    from ..tasks.families import family

    spec = cfg.tasks.tools
    if spec is None:
        fam = family(cfg.tasks.source)
        spec = fam.tools if fam is not None else "tgrs_agents.tasks.arithmetic:make_tools"
    return load_tool_factory(spec, base_dir=cfg.base_dir, source=cfg.source, field="tasks.tools")


def calibration_demonstrations(cfg: LoopConfig, n: int) -> list[dict[str, Any]]:
    """Clean demonstrations of ``n`` fresh built-in tasks, apart from both splits (canonically): the
    student's held-out demonstrations a ``student_compat`` teacher calibrates its IFD cut-off on."""
    from ..tasks.arithmetic import Difficulty, demonstration, make_tasks, splits

    t = cfg.tasks
    d = Difficulty(n_ops=t.n_ops)
    train, held = splits(t.n_train, t.n_eval, seed=t.seed, d=d)
    fresh = make_tasks(n, seed=t.seed + 20_000, d=d, prefix="calib-",
                       exclude={str(x.metadata["expression"]) for x in [*train, *held]})
    return [demonstration(x) for x in fresh]


def read_tasks(cfg: LoopConfig, name: str, field: str) -> list[Task]:
    """The tasks of a JSONL file named by ``field`` of the config; a bad line is an InputError."""
    return read_task_lines(cfg, name, field)[0]


def read_task_lines(cfg: LoopConfig, name: str, field: str) -> tuple[list[Task], dict[str, int]]:
    """(tasks, line number of each task id) of a JSONL task file."""
    path = cfg.resolve(name)
    if not path.is_file():
        raise ConfigError(f"task file not found: {path}", file=cfg.source, field=field)
    tasks: list[Task] = []
    lines: dict[str, int] = {}
    with path.open("rb") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                task = Task.model_validate(orjson.loads(raw))
            except orjson.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e})", file=path, line=line) from None
            except ValidationError as e:
                where, what = pydantic_problem(e)
                raise InputError(what, file=path, line=line, field=where) from None
            tasks.append(task)
            lines.setdefault(task.id, line)
    if not tasks:
        raise ConfigError(f"no tasks in {path}", file=cfg.source, field=field)
    return tasks, lines


# ------------------------------------------------------------------------------ the student

def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) takes a TCP connection within ``timeout_s``;
    False at once in offline mode (``HF_HUB_OFFLINE``), without any traffic."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_cached(name: str) -> bool:
    """Whether a hub model's config is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def check_student(cfg: LoopConfig, reachable: Callable[[], bool] = hub_reachable) -> None:
    """Fail in one line, within seconds, when the student cannot be loaded.

    A local directory is loaded as it is; a GGUF reference (``x.gguf``, ``gguf:PACKAGE``) must name a file
    that exists (see :mod:`tgrs_agents.teachers.loading`). A name with more than one ``/`` (or starting with ``.``,
    ``/`` or ``~``) is a path, so a missing one is a typo. Anything else is a hub name: from the
    local cache it loads offline (the hub is then put in offline mode when unreachable, so nothing
    waits on retries); otherwise the hub must answer a TCP connection within two seconds.
    """
    s = cfg.student
    if s.model == "tiny" or s.backend == "openai":
        return
    if Path(s.model).expanduser().exists():
        return
    where = {"file": cfg.source, "field": "student.model"}
    if s.model.startswith(GGUF_PREFIX) or s.model.lower().endswith(".gguf"):  # a GGUF file, or one a package ships
        resolve_model_ref(s.model, Path(cfg.base_dir), file=cfg.source, field="student.model")
        return
    if s.model.startswith((".", "/", "~")) or s.model.count("/") > 1:
        raise ConfigError(f"cannot load student {s.model!r}: no such directory", **where)
    if reachable():
        return
    if hub_cached(s.model):
        os.environ["HF_HUB_OFFLINE"] = "1"  # load from the cache without retrying the hub
        try:
            from huggingface_hub import constants

            constants.HF_HUB_OFFLINE = True  # read at import time; set the live value too
        except ImportError:
            pass
        return
    raise ConfigError(f"cannot load student {s.model!r}: not a local path and the hub is unreachable", **where)


def student_backend(cfg: LoopConfig, model_path: Path | str | GeneratorConfig, services: Services) -> Any:
    """The generation backend of the student at ``model_path`` (a served student: its model name); of the
    served ``[generator]`` when ``model_path`` is ``cfg.generator`` (what the generate stage samples from)."""
    if isinstance(model_path, GeneratorConfig):
        return served_backend(model_path, services, source=cfg.source, field="generator")
    s = cfg.student
    if s.backend == "openai":
        return served_backend(s, services, source=cfg.source, field="student")
    try:
        if s.backend == "vllm":
            from ..generate.vllm_backend import VLLMBackend

            return VLLMBackend(str(model_path))
        from ..generate.hf import TransformersBackend

        return TransformersBackend(str(model_path), device=s.device, batch_size=cfg.generate.batch_size)
    except OSError as e:  # a hub name that is not there, a directory without weights
        raise ConfigError(f"cannot load student {str(model_path)!r}: {str(e).strip().splitlines()[0]}",
                          file=cfg.source, field="student.model") from None


def served_backend(s: StudentConfig | GeneratorConfig, services: Services, *, source: str | None,
                   field: str) -> Any:
    """An :class:`~tgrs_agents.generate.openai_backend.OpenAIChatBackend` for a served model (``[student]``
    with ``backend = "openai"``, or ``[generator]``), its calls through the run's ``services``: the
    endpoint's shared limiter, the retry policy, the budget. A missing key or price names ``field``."""
    from ..generate.openai_backend import OpenAIChatBackend

    endpoint: dict[str, Any] = {"base_url": s.base_url} if s.base_url else {}  # else the backend's default
    if isinstance(s, GeneratorConfig):
        endpoint.update(rpm=s.rpm, tpm=s.tpm, max_concurrency=s.max_concurrency)
    try:
        return OpenAIChatBackend(s.model, **endpoint, api_key_env=s.api_key_env or None, services=services,
                                 price_input_per_mtok=s.price_input_per_mtok,
                                 price_output_per_mtok=s.price_output_per_mtok)
    except ConfigError as e:
        raise ConfigError(e.detail, file=source, field=field) from None


def rollouts(cfg: LoopConfig, model_path: Path | str | GeneratorConfig, tasks: list[Task], n: int,
             temperature: float, id_prefix: str, services: Services) -> tuple[list[dict[str, Any]], Any]:
    """(trajectories, :class:`~tgrs_agents.generate.rollouts.RolloutStats`): ``n`` rollouts per task, from
    the student at ``model_path`` or (``model_path`` is ``cfg.generator``) the served generator, whose
    trajectories say so in ``metadata.generator`` (its ``system`` instructions are left out of them)."""
    # the tasks split over Ray workers (tgrs_agents.loop.ray_rollouts); a served generator's calls stay here
    if cfg.generate.engine == "ray" and not isinstance(model_path, GeneratorConfig):
        from .ray_rollouts import rollouts_on_ray
        return rollouts_on_ray(cfg, model_path, tasks, n, temperature, id_prefix, services)
    from ..generate.base import SamplingParams
    from ..generate.rollouts import RolloutStats, rollout

    g = cfg.generate
    served = model_path if isinstance(model_path, GeneratorConfig) else None
    if served is not None and served.system:  # the generator's instructions, not the student's prompt
        tasks = [t.model_copy(update={"messages": [Message(role="system", content=served.system), *t.messages]})
                 for t in tasks]
    tools = tool_factory(cfg)
    params = SamplingParams(n=n, temperature=temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                            seed=cfg.seed)

    async def go() -> tuple[list[dict[str, Any]], Any]:
        backend = student_backend(cfg, model_path, services)
        stats = RolloutStats()
        try:
            recs = await rollout(backend, tasks, n=n, tools=tools, tool_timeout_s=cfg.tasks.tool_timeout_s,
                                 params=params,
                                 max_turns=g.max_turns, max_tokens=g.max_tokens, id_prefix=id_prefix, stats=stats)
            if served is not None:
                for r in recs:
                    served_record(r, served)
            return recs, stats
        finally:
            await backend.aclose()

    return asyncio.run(go())


def served_record(rec: dict[str, Any], g: GeneratorConfig) -> None:
    """A served generator's trajectory as the student will learn it: without the generator's ``system``
    instructions (prompt distillation: the student is evaluated without them), and saying who wrote it."""
    msgs = rec["messages"]
    if g.system and msgs and msgs[0].get("role") == "system" and msgs[0].get("content") == g.system:
        rec["messages"] = msgs[1:]
    rec.setdefault("metadata", {})["generator"] = f"{g.backend}:{g.model}"
