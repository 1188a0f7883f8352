"""A round's generate -> judge, streamed: candidates reach the panel as each chunk of rollouts ends.

The round's tasks are cut into chunks of ``chunk_tasks`` tasks (``n`` rollouts each). The generator
(:func:`student_chunks`: the student's backend, which samples in its own worker thread, so the event
loop stays free for the judges' HTTP calls) makes one chunk at a time; each chunk is appended to
``round-K/candidates.jsonl`` (one write, flushed) and handed to the curation run
(:class:`~tgrs_agents.curation.run.CurateRun` with ``source=``) through a :class:`LineFeed`, a bounded
queue of chunks: the panel judges chunk ``c`` while the student samples chunk ``c + 1``, and a panel
that falls behind holds the generator back. ``stream=False`` makes every chunk first, then judges the
file through the same feed (same candidates, same decisions: the sequential baseline).

Resume. ``candidates.jsonl`` is append-only and chunks are written in order, so the lines on disk are
the first chunks, whole, and perhaps the start of the next one (a torn last line is cut). A killed
round keeps every line it wrote (the curation run has decided some of them; it resumes by line
number, so nothing is judged twice) and *regenerates deterministically* what is missing: chunk ``c``
is sampled with seed ``seed + CHUNK_SEED * c`` and the backend's call counter restarted, so it is the
same whatever ran before it (exactly so for the transformers and vLLM students; a served student is
as repeatable as its server), and only the records after the kept ones are appended. A kept line
whose id is not the regenerated record's fails the run, naming the file and line.

Figures (:class:`StreamResult`): the wall time of generation (first chunk started to last chunk
written), of judging (the curation run's start to its end), their overlap and the round's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InputError
from ..types import Task

if TYPE_CHECKING:
    from ..paid.services import Services
    from .config import GeneratorConfig, LoopConfig

CHUNK_SEED = 7_919  # chunk c samples with seed + CHUNK_SEED * c (the backends add 1_000_003 per call)
CHUNKS = 16  # a round's default number of chunks: the judge waits for the first, the generator not at all
SERVED_AHEAD = 16  # chunks a served student or generator samples at once (benchmarks/bench_served_generate.py)
FEED_BATCH = 512  # lines per batch when a file's lines are handed over

ChunkFn = Callable[[int, list[Task]], Awaitable[list[dict[str, Any]]]]
Lines = list[tuple[int, bytes]]
_END = object()


class LineFeed:
    """The bounded hand-over from the generator to the curation reader: batches of ``(line, bytes)``.

    ``fingerprint`` stands for the growing file's content in the curation run's ``run.json``."""

    def __init__(self, fingerprint: str, maxsize: int = 2) -> None:
        self.fingerprint = fingerprint
        self._q: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)

    async def put(self, batch: Lines) -> None:
        if batch:
            await self._q.put(batch)

    async def close(self, error: BaseException | None = None) -> None:
        await self._q.put(error if error is not None else _END)

    async def __aiter__(self) -> AsyncIterator[Lines]:
        while (item := await self._q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item  # the generator failed: the curation run stops and raises it
            yield item


class CandidateFile:
    """``candidates.jsonl``, append-only: what is on disk (a torn last line cut) and appending more."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.ids: list[str] = []
        keep = 0
        with self.path.open("rb") as f:
            for line, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # a line cut short by a kill is not a candidate
                try:
                    cid = orjson.loads(raw).get("id")
                except (orjson.JSONDecodeError, AttributeError):
                    cid = None
                if not isinstance(cid, str):
                    raise InputError("expected a candidate with a string 'id' (this file is the round's own: "
                                     "delete it to regenerate the round)", file=self.path, line=line, field="id")
                self.ids.append(cid)
                keep += len(raw)
        if keep < self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(keep)

    @property
    def count(self) -> int:
        return len(self.ids)

    def lines(self, start: int = 0) -> Any:
        """Batches of ``(line, bytes)`` of the lines after line ``start``."""
        batch: Lines = []
        with self.path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                if n > start:
                    batch.append((n, raw))
                if len(batch) >= FEED_BATCH:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def append(self, recs: list[dict[str, Any]]) -> Lines:
        raws = [orjson.dumps(r) + b"\n" for r in recs]
        with self.path.open("ab") as f:
            f.write(b"".join(raws))
        first = self.count + 1
        self.ids += [r["id"] for r in recs]
        return list(enumerate(raws, start=first))


@dataclass
class StreamResult:
    """What one round's generate -> judge did. ``*_s`` are wall seconds of this invocation."""

    samples: int = 0
    generated_now: int = 0  # made by this invocation (the rest were kept from a killed one)
    generate_s: float = 0.0
    judge_s: float = 0.0
    overlap_s: float = 0.0
    round_s: float = 0.0
    streamed: bool = True
    summary: dict[str, Any] | None = None  # the curation run's (None: nothing judged)
    spans: dict[str, list[float]] = field(default_factory=dict)

    def timing(self) -> dict[str, Any]:
        return {"streamed": self.streamed, "generate_s": round(self.generate_s, 3),
                "judge_s": round(self.judge_s, 3), "overlap_s": round(self.overlap_s, 3),
                "round_s": round(self.round_s, 3)}


def chunked(tasks: list[Task], chunk_tasks: int | None = None) -> list[list[Task]]:
    """The round's tasks in chunks of ``chunk_tasks`` (None: about :data:`CHUNKS` chunks)."""
    size = max(1, chunk_tasks or -(-len(tasks) // CHUNKS))
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def stream_fingerprint(tasks: list[Task], n: int, id_prefix: str) -> str:
    """What a round's candidates file is, before it is written: its ids' prefix, tasks and ``n``."""
    h = hashlib.sha256("\n".join(t.id for t in tasks).encode()).hexdigest()[:12]
    return f"stream:{id_prefix}{len(tasks)}x{n}:{h}"


async def generate_and_judge(
    chunk_fn: ChunkFn, tasks: list[Task], n: int, candidates: Path, *,
    judge: Callable[[LineFeed], Awaitable[dict[str, Any]]] | None = None,
    stream: bool = True, chunk_tasks: int | None = None, fingerprint: str = "stream", feed_size: int = 2,
    ahead: int = 1,
) -> StreamResult:
    """Make the round's candidates (``n`` per task) into ``candidates`` and judge them.

    ``judge(feed)`` runs the curation over the feed and returns its summary (None: only generate).
    A failure on either side ends both: the generator stops at once; the curation run drains the
    calls in flight, journals them, and the error is raised. ``ahead``: chunks sampled at once (each
    written in order as the ones before it are): 1 for a local student (one worker thread, and a
    chunk's seeds count its own calls), more for a served one, whose calls wait on the network."""
    cfile = CandidateFile(candidates)
    res = StreamResult(streamed=stream and judge is not None)
    t0 = time.perf_counter()
    feed = LineFeed(fingerprint, feed_size)

    async def produce(to: LineFeed | None) -> None:
        g0 = time.perf_counter()
        if to is not None:
            for batch in cfile.lines():  # what a killed invocation wrote: judged unless decided
                await to.put(batch)
        todo, start = [], 0  # (chunk, its tasks, its first line - 1): the chunks not all on disk
        for c, part in enumerate(chunked(tasks, chunk_tasks)):
            if cfile.count < start + len(part) * n:
                todo.append((c, part, start))
            start += len(part) * n
        running: dict[int, asyncio.Future[list[dict[str, Any]]]] = {}

        def launch(upto: int) -> None:  # at most ``ahead`` chunks sampled and not yet written
            for c, part, _ in todo[upto:upto + max(1, ahead)]:
                if c not in running:
                    running[c] = asyncio.ensure_future(chunk_fn(c, part))

        try:
            for k, (c, part, start) in enumerate(todo):
                launch(k)
                recs = await running.pop(c)
                if len(recs) != len(part) * n:
                    raise RuntimeError(f"chunk {c}: {len(recs)} rollouts for {len(part)} tasks x {n}")
                have = cfile.count - start
                for i, (got, rec) in enumerate(zip(cfile.ids[start:], recs[:have], strict=True)):
                    if got != rec["id"]:
                        raise InputError(f"kept candidate {got!r} is not this round's {rec['id']!r} (delete the "
                                         "file to regenerate the round)", file=candidates, line=start + i + 1,
                                         field="id")
                lines = cfile.append(recs[have:])
                res.generated_now += len(lines)
                if to is not None:
                    await to.put(lines)
        finally:  # a failure or a stop: the chunks still sampling are not waited for
            for t in running.values():
                t.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
        res.spans["generate"] = [g0 - t0, time.perf_counter() - t0]

    async def run_judge() -> None:
        assert judge is not None
        j0 = time.perf_counter()
        res.summary = await judge(feed)
        res.spans["judge"] = [j0 - t0, time.perf_counter() - t0]

    async def file_lines(to: LineFeed | None) -> None:
        assert to is not None
        for batch in cfile.lines():  # the same hand-over, after the whole round is made
            await to.put(batch)

    if judge is None:
        await produce(None)
    elif not res.streamed:
        await produce(None)
        await _concurrently(file_lines, feed, run_judge)
    else:
        await _concurrently(produce, feed, run_judge)
    res.samples = cfile.count
    g, j = res.spans.get("generate"), res.spans.get("judge")
    res.generate_s = g[1] - g[0] if g else 0.0
    res.judge_s = j[1] - j[0] if j else 0.0
    if g and j:
        res.overlap_s = max(0.0, min(g[1], j[1]) - max(g[0], j[0]))
    res.round_s = time.perf_counter() - t0
    return res


async def _concurrently(produce: Callable[[LineFeed | None], Awaitable[None]], feed: LineFeed,
                        run_judge: Callable[[], Awaitable[None]]) -> None:
    """The producer beside the judge. The producer's failure reaches the judge through the feed (the
    curation run stops, drains its calls in flight and raises it); a judge that ends (done, stopped
    by its budget, failed) ends the producer. The judge's error is raised as it is."""
    async def gen() -> None:
        try:
            await produce(feed)
        except Exception as e:  # noqa: BLE001 - handed to the judge, which raises it after draining
            await feed.close(e)
            return
        await feed.close()

    task = asyncio.create_task(gen())
    try:
        await run_judge()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def student_chunks(cfg: LoopConfig, model_path: Path | str | GeneratorConfig, n: int, temperature: float,
                         id_prefix: str, services: Services, stats: Any = None) -> AsyncIterator[ChunkFn]:
    """A :data:`ChunkFn` over the student at ``model_path``, or the served ``[generator]`` when it is
    ``cfg.generator`` (as :func:`~tgrs_agents.loop.sampling.rollouts`). The model is loaded (in a thread)
    at the first chunk, so a round that has all its chunks loads nothing; it is closed on exit.

    The local backends sample in their own worker thread, so the event loop serves the judges' HTTP
    calls meanwhile; a small model's generation is mostly Python, though, and shares the GIL with
    them (a child process for the tiny student was measured slower: its start-up cost more than the
    GIL did)."""
    from ..generate.base import SamplingParams
    from ..generate.rollouts import rollout
    from ..types import Message
    from .config import GeneratorConfig
    from .sampling import served_record, student_backend, tool_factory

    g = cfg.generate
    tools = tool_factory(cfg)
    served = model_path if isinstance(model_path, GeneratorConfig) else None
    backends: list[Any] = []

    async def chunk(c: int, tasks: list[Task]) -> list[dict[str, Any]]:
        if not backends:
            backends.append(await asyncio.to_thread(student_backend, cfg, model_path, services))
        backend = backends[0]
        if hasattr(backend, "calls"):
            backend.calls = 0  # its seeds count calls: chunk c draws the same whatever ran before
        if served is not None and served.system:  # the generator's instructions, left out of the records
            tasks = [t.model_copy(update={"messages": [Message(role="system", content=served.system), *t.messages]})
                     for t in tasks]
        params = SamplingParams(n=n, temperature=temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                                seed=cfg.seed + CHUNK_SEED * c)
        recs = await rollout(backend, tasks, n=n, tools=tools, tool_timeout_s=cfg.tasks.tool_timeout_s,
                             params=params, max_turns=g.max_turns, max_tokens=g.max_tokens, id_prefix=id_prefix,
                             stats=stats)
        if served is not None:
            for r in recs:
                served_record(r, served)
        return recs

    try:
        yield chunk
    finally:
        for b in backends:
            await b.aclose()
