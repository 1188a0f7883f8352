"""``tgrs curate --engine ray``: the input in shards, each an ordinary curate run on a Ray worker,
merged into the run directory's usual files.

Ray Core tasks, not Ray Data: a shard is a whole curate run (its own async pipeline, cascade,
journal and resume), which a task holds naturally, and a task whose worker dies is re-run by Ray
(``max_retries``) and resumes from its shard's journal -- nothing lost, nothing written twice. The
driver keeps the plan (``DIR/cluster.json``: the input's size and the byte ranges), so a restarted
driver reuses the same shards and every finished shard is done at once.

Layout of ``DIR``::

    cluster.json                 the shard plan
    shards/NNN/input.jsonl       the shard's bytes of the input (streamed, atomic)
    shards/NNN/ids.jsonl         the pre-pass: the shard's ids; foreign.jsonl: those an earlier
                                 shard used first, set aside as one process sets them aside (.ids)
    shards/NNN/run/              the shard's curate run (journal, outputs, summary)
    accepted.jsonl ... summary.json   the merge, as a single-process run writes them

Every worker's paid calls share the cluster's state (:mod:`.actors`): one lease bank per endpoint,
one budget book, the verdict ledger (SQLite, WAL) on the storage every worker sees, and a claim book
so content in flight on one worker is not paid again by another (:mod:`.dedupe`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..curation.lock import run_lock
from ..curation.run import CurateOptions, CurateRun
from ..errors import ConfigError
from . import require_ray
from .ids import cross_shard_repeats, scan_shard, seed_index
from .shards import copy_range, merge, merged_summary, plan


@dataclass(frozen=True)
class ShardSpec:
    index: int
    source: str
    start: int
    end: int
    dir: str
    panel: Any  # PanelConfig
    options: CurateOptions
    run_id: str
    budget_usd: float | None  # the book's limit: the run's budget less what earlier invocations spent
    # the API keys the panel's teachers read (``api_key_env``), as the driver has them: a worker of a
    # cluster started elsewhere may lack them. In the task's arguments (memory), never in a
    # runtime_env (which Ray keeps in its control store and shows), a file or a message
    secrets: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    claim_parts: int = 1  # claim actors, the claims split by key over them (actors.claim_parts)


def prepare_shard(spec: ShardSpec) -> dict[str, Any]:
    """The pre-pass on a worker: the shard's bytes copied, its ids listed (:mod:`.ids`)."""
    d = Path(spec.dir)
    d.mkdir(parents=True, exist_ok=True)
    lines = copy_range(spec.source, spec.start, spec.end, d / "input.jsonl")
    return {"index": spec.index, "lines": lines, "ids": scan_shard(d / "input.jsonl", spec.options.input_format)}


def run_shard(spec: ShardSpec) -> dict[str, Any]:
    """One shard on a worker: copy its bytes, curate them with the cluster's paid-call state."""
    from ..curation.panel import Panel
    from ..formats import resolve
    from ..paid.ledger import Ledger
    from ..paid.services import Services
    from .actors import RayBank, RayBook, RayClaims, bank_handle, book_handle, claims_handle
    from .budget import SharedBudget
    from .dedupe import ClusterCached
    from .limiter import LeasedRegistry

    for name, value in spec.secrets.items():
        os.environ.setdefault(name, value)
    d = Path(spec.dir)
    lines = prepare_shard(spec)["lines"]  # done already (the pre-pass): counted again, never copied twice
    opts = spec.options
    fmt = resolve(d / "input.jsonl", opts.input_format)[0]
    seed_index(d, fmt, spec.panel.fingerprint(), force=opts.force)  # the ids earlier shards used first
    # the run's actors, only those this run uses: the book where there is a budget, the claims where
    # there is a ledger (each actor is a process, started at the run's beginning: :func:`_start_state`)
    book = RayBook(book_handle(spec.run_id, spec.budget_usd)) if opts.budget_usd is not None else None
    budget = SharedBudget(opts.budget_usd, book=book)
    limiters = LeasedRegistry(lambda key, limits: RayBank(bank_handle(spec.run_id, key, limits)))
    claims = None if not opts.cache else functools.partial(
        ClusterCached, claims=RayClaims([claims_handle(spec.run_id, k) for k in range(spec.claim_parts)]),
        holder=f"shard-{spec.index}")
    services = Services(budget=budget, ledger=Ledger(opts.cache_path) if opts.cache else None,
                        limiters=limiters, breaker_failures=opts.breaker_failures, cache_factory=claims)
    try:
        panel = Panel.from_config(spec.panel, services)
        run = CurateRun(d / "input.jsonl", spec.panel, d / "run", options=opts, panel=panel, services=services)
        summary = asyncio.run(run.run())
    finally:
        limiters.close()
        budget.close()
    return {"index": spec.index, "lines": lines, "summary": summary}


def curate_on_ray(input_path: str | Path, panel: Any, out: str | Path, *, options: CurateOptions = CurateOptions(),
                  workers: int = 4, address: str | None = None, shards: int | None = None) -> dict[str, Any]:
    """Curate ``input_path`` on Ray (``address``: a running cluster; else a local one of ``workers``
    CPUs); returns the merged summary. Resumable: run it again on the same ``out``."""
    ray: Any = require_ray()
    src, out = Path(input_path), Path(out)
    if workers < 1:
        raise ConfigError(f"expected at least one worker, got {workers}", field="workers")
    if not src.is_file():
        raise ConfigError("--engine ray reads one trajectory file (a directory: run without --engine ray)"
                          if src.is_dir() else "input file not found", file=src)
    from ..curation.ingest import input_unit
    from ..formats import resolve

    fmt, _ = resolve(src, options.input_format)
    if input_unit(src, fmt) != "line":
        raise ConfigError(f"--engine ray needs a line format (one record a line); {fmt.name} is not", file=src)
    options = dataclasses.replace(options, input_format=fmt.name)  # every shard reads as the whole would
    _start(ray, workers, address)
    with run_lock(out):
        specs = _plan(src, out, panel, options, shards or workers)
        prepare = ray.remote(num_cpus=1, max_retries=5)(prepare_shard)
        task = ray.remote(num_cpus=1, max_retries=5)(run_shard)
        from .actors import claim_parts, release_run

        state: dict[str, Any] = {}
        try:
            banks = _endpoints(specs[0]) if specs else {}  # a missing key fails here, before any task
            rpms = [lim.rpm for lim in banks.values()]
            parts = claim_parts(sum(rpms) if rpms and all(rpms) else None, workers)
            specs = [dataclasses.replace(s, claim_parts=parts) for s in specs]
            # the pre-pass: a repeated id whose first use is in an earlier shard is set aside, as one
            # process sets it aside, and never judged (see .ids)
            scans = [prepare.remote(s) for s in specs]
            if specs:
                _start_state(specs[0], banks)  # the run's actors come up while the pre-pass runs
            prepared = sorted(_get(ray, scans), key=lambda r: r["index"])
            offsets = list(itertools.accumulate((r["lines"] for r in prepared), initial=0))[:len(prepared)]
            repeats = cross_shard_repeats([Path(s.dir) for s in specs], offsets, out)
            results = sorted(_get(ray, [task.remote(s) for s in specs]), key=lambda r: r["index"])
        finally:  # the run's actors are detached (a killed worker must not take them along): end them
            state = release_run(specs[0].run_id) if specs else {}
        rows = merge([Path(s.dir) / "run" for s in specs], offsets, out,
                     shard_inputs=[str(Path(s.dir) / "input.jsonl") for s in specs], source=str(src))
        summary = merged_summary([r["summary"] for r in results], rows, workers)
        summary["engine"]["paid_state"] = state  # the bank per endpoint, the book, the claims: last reports
        summary["engine"]["cross_shard_repeats"] = repeats  # set aside by the pre-pass, never judged
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _endpoints(spec: ShardSpec) -> dict[str, Any]:
    """The panel's paid endpoints and their limits, from the teachers' configs (no SDK imported, no
    client made: a second of the driver's time on the critical path), with the lowest limits of the
    teachers that share one, as one process keeps them. A judge whose key is missing fails here,
    before any shard, as when a panel is built."""
    from ..teachers.base import teacher_class
    from ..teachers.llm_judge import ApiJudge

    panel = spec.panel
    banks: dict[str, Any] = {}
    for tc in panel.teachers:
        cls = teacher_class(tc.kind)
        if not (isinstance(cls, type) and issubclass(cls, ApiJudge)):
            continue  # built-in local teachers, or a plugin's: its shards start its bank when they need it
        if not os.environ.get(tc.api_key_env):  # the rule ApiJudge keeps (the secrets come from here)
            raise ConfigError(f"environment variable {tc.api_key_env} is not set (the API key is read from it "
                              "and nowhere else)", file=panel.source, field=f"teacher.{tc.name}.api_key_env")
        key, limits = cls.endpoint_for(tc)
        banks[key] = _lower(banks[key], limits) if key in banks else limits
    return banks


def _start_state(spec: ShardSpec, banks: dict[str, Any]) -> None:
    """Create the run's actors from the driver: a bank per endpoint (``banks``: :func:`_endpoints`), and
    the book and the claims where the run has a budget and a ledger. Each actor is a process of its own
    (about 0.6 s to come up here), so they are started first and come up while the pre-pass runs."""
    from .actors import bank_handle, book_handle, claims_handle

    for key, limits in banks.items():  # first: a shard's first call waits for its endpoint's bank
        bank_handle(spec.run_id, key, limits)
    if spec.options.cache:
        for k in range(spec.claim_parts):
            claims_handle(spec.run_id, k)
    if spec.options.budget_usd is not None:
        book_handle(spec.run_id, spec.budget_usd)


def _lower(a: Any, b: Any) -> Any:
    """The lower of each stated rate of two endpoint limits (None: not stated)."""
    pick = lambda x, y: y if x is None else x if y is None else min(x, y)  # noqa: E731
    return dataclasses.replace(a, rpm=pick(a.rpm, b.rpm), tpm=pick(a.tpm, b.tpm),
                               input_tpm=pick(a.input_tpm, b.input_tpm),
                               output_tpm=pick(a.output_tpm, b.output_tpm),
                               max_concurrency=min(a.max_concurrency, b.max_concurrency))


def _warm(_: int) -> int:
    import importlib
    import time

    for name in ("tgrs_agents.curation.run", "tgrs_agents.paid.services", "tgrs_agents.cluster.actors"):
        importlib.import_module(name)  # what a shard imports first
    for sdk, client in (("openai", "AsyncOpenAI"), ("anthropic", "AsyncAnthropic")):
        try:  # where the api extra is installed: a client made once imports its HTTP stack (half a second)
            getattr(importlib.import_module(sdk), client)(api_key="-", base_url="http://127.0.0.1:9", max_retries=0)
        except ImportError:
            pass
    time.sleep(0.1)  # held a moment, so the n tasks run on n workers at once
    return os.getpid()


def warm_workers(n: int, *, address: str | None = None) -> set[int]:
    """Start ``n`` Ray workers with a shard's modules imported; their pids. Ray keeps a job's idle
    workers (up to its CPUs), so the next :func:`curate_on_ray` in this driver starts on them instead
    of paying worker start-up (seconds each); a second run in one driver gets the same for free."""
    ray: Any = require_ray()
    _start(ray, n, address)
    return set(ray.get([ray.remote(num_cpus=1)(_warm).remote(i) for i in range(n)]))


def _start(ray: Any, workers: int, address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else max(workers, 1), include_dashboard=False,
                 configure_logging=False, log_to_driver=False)


async def acurate_on_ray(input_path: str | Path, panel: Any, out: str | Path, *,
                         options: CurateOptions = CurateOptions(), workers: int = 4, address: str | None = None,
                         bus: Any = None) -> dict[str, Any]:
    """:func:`curate_on_ray` for ``await curate(..., engine="ray")``: Ray is started in this thread
    (it sets its signal handlers here), the run waits in another, so the event loop stays free."""
    if bus is not None:
        raise ConfigError("bus= needs engine='local': with Ray each shard journals its own events "
                          "(DIR/shards/NNN/run/events.jsonl)", field="bus")
    if workers < 1:
        raise ConfigError(f"expected at least one worker, got {workers}", field="workers")
    _start(require_ray(), workers, address)
    return await asyncio.to_thread(curate_on_ray, input_path, panel, out, options=options, workers=workers,
                                   address=address)


def _get(ray: Any, refs: list[Any]) -> list[Any]:
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:  # a shard's own error (a bad key, a halt): said as it is
        from ..errors import TgrsError

        if isinstance(e.cause, TgrsError):
            raise e.cause from None
        raise


def _plan(src: Path, out: Path, panel: Any, options: CurateOptions, n: int) -> list[ShardSpec]:
    """The shard plan: reused while the input is the same size (a resumed run), made anew otherwise."""
    path = out / "cluster.json"
    size = src.stat().st_size
    doc = json.loads(path.read_text()) if path.exists() else None
    if doc is not None and doc["size"] != size:
        if not options.force:
            raise ConfigError(f"the input is {size} bytes, {doc['size']} when this run began: --force to start "
                              "afresh, or another --out", file=src)
        doc = None
    if doc is None:  # afresh: a new plan, new shard directories
        shutil.rmtree(out / "shards", ignore_errors=True)
        doc = {"input": str(src.resolve()), "size": size, "run_id": uuid.uuid4().hex[:12], "shards": plan(src, n)}
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, path)
    before = sum(_spent(out / "shards" / f"{i:03d}" / "run") for i in range(len(doc["shards"])))
    limit = None if options.budget_usd is None else max(options.budget_usd - before, 0.0)
    # ``force`` goes to each shard as it is: a shard run archives only a run it cannot resume (another
    # panel), so a retried shard, or a restarted driver, still resumes what this run began
    return [ShardSpec(i, str(src), a, b, str(out / "shards" / f"{i:03d}"), panel, options, doc["run_id"], limit,
                      _secrets(panel)) for i, (a, b) in enumerate(doc["shards"])]


def _secrets(panel: Any) -> dict[str, str]:
    names = {getattr(t, "api_key_env", None) for t in getattr(panel, "teachers", ())}
    return {n: os.environ[n] for n in names if n and n in os.environ}


def _spent(run_dir: Path) -> float:
    try:
        return float(json.loads((run_dir / "summary.json").read_text()).get("cost_usd") or 0.0)
    except (OSError, ValueError):
        return 0.0
