"""Loopback stand-in for the OpenAI chat-completions and Anthropic messages APIs, with fault injection.

The real ``openai.AsyncOpenAI`` / ``anthropic.AsyncAnthropic`` clients talk to it unchanged::

    with StandIn(FaultPlan(p_5xx=0.05, rpm=600)) as srv:
        oa = openai.AsyncOpenAI(api_key="k", base_url=srv.url_openai, max_retries=0)
        an = anthropic.AsyncAnthropic(api_key="k", base_url=srv.url_anthropic, max_retries=0)
        srv.script.extend(["429", "drop"])   # force the next two outcomes, then random faults resume
        ...
        srv.stats["429"], srv.requests[-1]["body"]

Routes: ``POST /v1/chat/completions`` (ChatCompletion whose message content is the verdict as a JSON
string; with ``chat=``, a served model: ``chat(body)`` returns the assistant message, ``content`` and/or
``tool_calls``, or None for the verdict), ``POST /v1/messages`` (Message with one ``tool_use`` block
whose input is the verdict; the tool name is ``tool_choice.name`` from the request, default
``record_verdict``), ``GET /stats`` (the outcome counters) and ``GET /arrivals`` (``[time, outcome]`` of
each logged request, for timelines). The batch APIs (OpenAI files and batches, Anthropic message
batches) are ``srv.batches``: :mod:`.standin_batch`.

Each API request resolves to one outcome: ``"401"`` when no key is sent (``Authorization: Bearer`` or
``x-api-key``; the Anthropic SDK 2.x sends its key as a Bearer token), else the next scripted outcome
if ``script`` is non-empty (scripted outcomes bypass rate limits), else ``"429"`` when the
``rpm``/``tpm`` token buckets are empty, else a random fault drawn from the plan, else ``"ok"``.
Outcomes: ok 429 500 529 malformed drop slow 400 401 (``"529"`` answers 503 on the OpenAI route;
random ``p_5xx`` faults pick 500/502/503 and count as ``"500"``). Latency (lognormal) is added to every
outcome except the fast rejections 400/401/429. ``requests`` entries hold path, model, headers (key
values removed; ``has_key`` says whether one was sent), body, outcome and arrival time ``t``.

Rate limits come in three shapes. The default is a token bucket refilled at ``rpm / 60`` per second
that holds ``burst_s`` seconds of it (1: the rate is enforced over a second). A provider that grants
an *allowance per minute* -- a full minute's requests may burst -- is ``burst_s=60`` (a bucket that
holds a minute, refilled continuously) or ``window_s=60`` (a fixed window: ``rpm`` requests per
window, all of it back at each window boundary).

Rate-limit headers are computed at admission: ``*-limit`` is the per-minute limit and ``*-remaining``
the bucket's fullness scaled to it (a full bucket reports the whole limit; with a minute's bucket or
window, what is left of the allowance); resets are the time until the bucket is full (the window's
end). On 429, ``retry-after`` (fractional seconds, e.g. ``"0.35"``) and ``retry-after-ms`` give the
time until the request would be admitted; the SDKs prefer ``retry-after-ms``. Every response carries
a ``date`` header, as real servers' do (Anthropic's resets are times, read against it).

The server is a minimal asyncio HTTP/1.1 implementation (keep-alive, Content-Length bodies) so that
it can misbehave at the socket level (``drop`` closes the connection without a response). Run it in a
daemon thread with :meth:`StandIn.start` / ``with StandIn():``, inside the caller's loop with
:meth:`StandIn.serve` (then ``await aclose()``), or in
its own process: ``python -m tgrs_agents.testing.standin --port 0 --plan '{"latency_mean_s": 0.3}'``
prints ``PORT <n>`` and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import math
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, cast

from ..chat import content_text
from .standin_batch import BatchStandIn
from .standin_limits import Bucket, Limit, Window, ratelimit_headers

OUTCOMES = ("ok", "429", "500", "529", "malformed", "drop", "slow", "400", "401")
REQUEST_LOG_CAP = 10_000
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 529: "Overloaded"}
_SECRET_HEADERS = ("authorization", "x-api-key")


@dataclass
class FaultPlan:
    latency_mean_s: float = 0.0  # lognormal latency with this mean; 0 = none
    latency_sigma: float = 0.5
    p_5xx: float = 0.0  # 500/502/503 with an error body
    p_529: float = 0.0  # Anthropic overloaded_error (503 on the OpenAI route)
    p_malformed: float = 0.0  # 200 whose verdict is not valid JSON / tool input missing fields
    p_drop: float = 0.0  # close the connection without responding
    p_slow: float = 0.0  # sleep slow_s before answering (past the client's timeout)
    slow_s: float = 30.0
    rpm: float | None = None  # request token bucket, capacity rpm/60 * burst_s -> 429
    tpm: float | None = None  # input-token bucket, capacity tpm/60 * burst_s -> 429
    burst_s: float = 1.0
    window_s: float | None = None  # fixed windows of this length instead of buckets (rpm/tpm per minute)
    retry_after_header: bool = True  # retry-after (fractional seconds) and retry-after-ms on 429
    ratelimit_headers: bool = True  # x-ratelimit-* (OpenAI) / anthropic-ratelimit-* (Anthropic)
    # batch APIs (standin_batch.py): a batch is done this long after creation; faults per item/batch
    batch_delay_s: float = 0.0
    batch_expire_s: float | None = None  # a batch not done by then expires (its unprocessed items)
    p_batch_item_error: float = 0.0  # one item errors (500) while the rest succeed
    p_batch_cancel: float = 0.0  # the provider cancels a batch half-way through its delay
    batch_cancel_s: float = 0.0  # how long "cancelling" lasts after a cancel
    seed: int = 0


def default_brain(prompt: str) -> dict[str, Any]:
    """Pass iff the last ``Answer:`` line in ``<final>`` equals ``<reference>`` (as text or as numbers)."""
    refs = re.findall(r"<reference>(.*?)</reference>", prompt, re.S)
    finals = re.findall(r"<final>(.*?)</final>", prompt, re.S)
    if not refs or not finals:
        return {"score": 5, "passed": False, "rationale": "no <reference> or <final> tag in the prompt"}
    reference = refs[-1].strip()
    answers = re.findall(r"Answer:[ \t]*([^\n]*)", finals[-1])
    answer = answers[-1].strip() if answers else None
    passed = answer is not None and (answer == reference or _same_number(answer, reference))
    if passed:
        return {"score": 9, "passed": True, "rationale": f"final answer {answer!r} matches the reference"}
    why = "no 'Answer:' in the final text" if answer is None else f"{answer!r} != reference {reference!r}"
    return {"score": 2, "passed": False, "rationale": why}


def _same_number(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a.replace(",", "")), float(b.replace(",", "")), rel_tol=1e-9)
    except ValueError:
        return False


def _text(content: Any) -> str:
    """Text of a message ``content`` (parts on their own lines): the project's one content reader."""
    return content_text(content, sep="\n")


class StandIn:
    def __init__(self, plan: FaultPlan | None = None, *, brain: Callable[[str], dict] | None = None,
                 chat: Callable[[dict], dict | None] | None = None) -> None:
        self.plan = plan or FaultPlan()
        self.brain = brain or default_brain
        self.chat = chat  # a served model: request body -> assistant message, or None for the brain's verdict
        self.script: collections.deque[str] = collections.deque()
        self.stats: collections.Counter[str] = collections.Counter()
        self.requests: list[dict] = []
        self.port = 0
        self._rng = random.Random(self.plan.seed)
        self._ids = itertools.count(1)
        self._buckets: tuple[tuple, Limit | None, Limit | None, Limit | None] = ((), None, None, None)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self.batches = BatchStandIn(self)

    # ----- lifecycle -------------------------------------------------------------------------------
    @property
    def url_openai(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def url_anthropic(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, port: int = 0) -> int:
        """Start listening on 127.0.0.1 inside the running loop; returns the bound port."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _shutdown(self) -> list[asyncio.Task]:
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for task in conns:
            task.cancel()
        return conns

    async def aclose(self) -> None:
        """Stop a server started with :meth:`serve` and wait for its connections to close."""
        await asyncio.gather(*self._shutdown(), return_exceptions=True)
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run

    def start(self) -> int:
        """Serve from a daemon thread with its own event loop; returns the port."""
        ready = threading.Event()
        failed: list[BaseException] = []

        async def run() -> None:
            self._stop_event = asyncio.Event()
            try:
                await self.serve()
            except OSError as e:
                failed.append(e)
                return
            finally:
                ready.set()
            await self._stop_event.wait()
            await self.aclose()

        self._thread = threading.Thread(target=asyncio.run, args=(run(),), name="standin", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failed:
            raise RuntimeError(f"stand-in server did not start: {failed}")
        return self.port

    def stop(self) -> None:
        if self._thread is not None:  # thread mode
            assert self._loop is not None and self._stop_event is not None
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(10)
            self._thread = None
        else:  # serve() mode: call from the serving loop's thread (or await aclose())
            self._shutdown()

    def __enter__(self) -> StandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- HTTP/1.1 ----------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head[:-4].decode("latin-1").split("\r\n")
                    method, target, version = lines[0].split(" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    n = int(headers.get("content-length") or 0)
                    if "transfer-encoding" in headers:  # the SDKs always send Content-Length
                        writer.write(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                        return
                    body = await reader.readexactly(n) if n else b""
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
                    return
                conn = headers.get("connection", "").lower()
                keep = conn == "keep-alive" or (version == "HTTP/1.1" and conn != "close")
                path, _, query = target.partition("?")
                resp = await self._dispatch(method, path, headers, body, query)
                if resp is None:  # "drop": close without a response
                    writer.transport.abort()
                    return
                status, extra, payload = resp
                out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                       f"content-type: {extra.pop('content-type', 'application/json')}",
                       f"content-length: {len(payload)}",
                       "connection: " + ("keep-alive" if keep else "close"), f"date: {formatdate(usegmt=True)}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass  # CancelledError comes from our own shutdown; swallowed so the stream callback stays quiet
        finally:
            self._conns.discard(task)
            writer.close()

    # ----- API ---------------------------------------------------------------------------------------
    async def _dispatch(self, method: str, path: str, headers: dict[str, str], raw: bytes, query: str = ""):
        if self.batches.handles(path):  # files, batches, message batches: standin_batch.py
            return await self.batches.dispatch(method, path, query, headers, raw)
        if method == "GET" and path == "/stats":
            return 200, {}, json.dumps(dict(self.stats)).encode()
        if method == "GET" and path == "/arrivals":  # when each logged request came, and its outcome
            return 200, {}, json.dumps([[r["t"], r.get("outcome")] for r in self.requests]).encode()
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
            return 404, {}, json.dumps({"error": {"message": f"no route {method} {path}"}}).encode()
        anth = path == "/v1/messages"
        self.stats["requests"] += 1
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else None
        messages = body.get("messages") if body else None
        has_key = headers.get("authorization", "").startswith("Bearer ") and len(headers["authorization"]) > 7
        has_key = has_key or (anth and bool(headers.get("x-api-key")))
        rec = {"t": time.time(), "path": path, "model": (body or {}).get("model"), "has_key": has_key,
               "headers": {k: v for k, v in headers.items() if k not in _SECRET_HEADERS}, "body": body}
        if len(self.requests) >= REQUEST_LOG_CAP:
            del self.requests[: REQUEST_LOG_CAP // 10]
        self.requests.append(rec)

        system = _text(body.get("system")) if anth and body else ""
        valid = isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
        msgs: list[dict[str, Any]] = cast(list, messages) if valid else []
        texts = [_text(m.get("content")) for m in msgs]
        in_tokens = max(1, (len(system) + sum(map(len, texts))) // 4)
        rl, tl, ol = self._limiters()
        outcome, wait, scripted = None, 1.0, False
        if not has_key:
            outcome = "401"
        elif not valid:
            outcome = "400"
        elif self.script:
            outcome, scripted = self.script.popleft(), True
        if outcome is None and (rl or tl):
            wait = max(rl.wait_s(1) if rl else 0.0, tl.wait_s(in_tokens) if tl else 0.0)
            if wait > 0:
                outcome = "429"
            else:
                for b, n in ((rl, 1), (tl, in_tokens)):
                    if b:
                        b.take(n)
        if outcome is None:
            outcome = self._draw()
        rec["outcome"] = outcome
        self.stats[outcome] += 1

        p = self.plan
        rid = f"req_{next(self._ids):012x}"
        hdrs = {"request-id" if anth else "x-request-id": rid}
        if p.ratelimit_headers:  # as of admission, before the simulated latency
            hdrs.update(ratelimit_headers(anth, rl, tl, ol))
        if outcome not in ("400", "401", "429") and p.latency_mean_s > 0:
            mu = math.log(p.latency_mean_s) - p.latency_sigma**2 / 2
            await asyncio.sleep(self._rng.lognormvariate(mu, p.latency_sigma))
        if outcome == "slow":
            await asyncio.sleep(p.slow_s)
        if outcome == "drop":
            return None
        if outcome in ("ok", "slow", "malformed"):
            assert body is not None  # an answered request is a valid one (else: 400 above)
            prompt = "\n".join([system, *(
                _text(m.get("content")) for m in msgs if m.get("role") in ("user", "system"))])
            message = self.chat(body) if self.chat is not None and not anth else None
            if message is not None:
                return 200, hdrs, self._openai_message(body, rid, message, in_tokens, rec)
            verdict = self.brain(prompt)
            if anth:
                return 200, hdrs, self._anthropic_message(body, rid, verdict, in_tokens, ol, outcome)
            return 200, hdrs, self._openai_completion(body, rid, verdict, in_tokens, outcome)
        if outcome == "429" and p.retry_after_header:
            hdrs["retry-after"] = f"{wait:.3f}".rstrip("0").rstrip(".") or "0"
            hdrs["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
        status, etype, msg = {
            "429": (429, "rate_limit_error", "Rate limit reached; please retry after the indicated delay."),
            "500": (500, "api_error" if anth else "server_error", "The server had an error."),
            "529": (529 if anth else 503, "overloaded_error" if anth else "server_error", "Overloaded"),
            "400": (400, "invalid_request_error", "Invalid request: 'messages' must be a list of objects."),
            "401": (401, "authentication_error" if anth else "invalid_request_error", "Invalid API key."),
        }.get(outcome, (500, "api_error" if anth else "server_error", f"unknown outcome {outcome!r}"))
        if outcome == "500" and not scripted and self._rng.random() < 0.5:
            status = self._rng.choice((502, 503))
        if anth:
            err: dict = {"type": "error", "error": {"type": etype, "message": msg}, "request_id": rid}
        else:
            code = {"429": "rate_limit_exceeded", "401": "invalid_api_key"}.get(outcome)
            err = {"error": {"message": msg, "type": etype, "param": None, "code": code}}
        return status, hdrs, json.dumps(err).encode()

    def _draw(self) -> str:
        p, r = self.plan, self._rng.random()
        for outcome, prob in (("drop", p.p_drop), ("slow", p.p_slow), ("500", p.p_5xx),
                              ("529", p.p_529), ("malformed", p.p_malformed)):
            if r < prob:
                return outcome
            r -= prob
        return "ok"

    def _limiters(self) -> tuple[Limit | None, Limit | None, Limit | None]:
        """(requests, input tokens, output tokens) buckets; rebuilt when the plan's limits change."""
        p = self.plan
        key = (p.rpm, p.tpm, p.burst_s, p.window_s)
        if self._buckets[0] != key:
            def limit(per_minute: float | None) -> Limit | None:
                if not per_minute:
                    return None
                return Window(per_minute, p.window_s) if p.window_s else Bucket(per_minute, p.burst_s)

            rl, tl = limit(p.rpm), limit(p.tpm)
            ol = limit(p.tpm)  # output tokens: reported, not enforced
            self._buckets = (key, rl, tl, ol)
        return self._buckets[1:]

    def _openai_completion(self, body: dict, rid: str, verdict: dict, in_tokens: int, outcome: str) -> bytes:
        content = '{"score": 7, "passed": tru' if outcome == "malformed" else json.dumps(verdict)
        out_tokens = max(1, len(content) // 4)
        return json.dumps({
            "id": f"chatcmpl-{rid[4:]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "stand-in", "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": in_tokens, "completion_tokens": out_tokens,
                      "total_tokens": in_tokens + out_tokens},
        }).encode()

    @staticmethod
    def _openai_message(body: dict, rid: str, message: dict, in_tokens: int, rec: dict) -> bytes:
        """A served model's turn (``chat``): its ``content`` and ``tool_calls`` as the assistant message;
        the usage it reports is kept in the request's log entry (``rec["usage"]``)."""
        content, calls = message.get("content"), message.get("tool_calls") or None
        out_tokens = max(1, (len(content or "") + len(json.dumps(calls or []))) // 4)
        rec["usage"] = {"prompt_tokens": in_tokens, "completion_tokens": out_tokens}
        return json.dumps({
            "id": f"chatcmpl-{rid[4:]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or "stand-in", "system_fingerprint": None,
            "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None,
                                     "tool_calls": calls}}],
            "usage": {**rec["usage"], "total_tokens": in_tokens + out_tokens},
        }).encode()

    def _anthropic_message(self, body: dict, rid: str, verdict: dict, in_tokens: int,
                           ol: Limit | None, outcome: str) -> bytes:
        if outcome == "malformed":
            verdict = {"score": "high", "rationale": verdict.get("rationale", "")}
        choice = body.get("tool_choice")
        name = (choice.get("name") if isinstance(choice, dict) else None) or "record_verdict"
        out_tokens = max(1, len(json.dumps(verdict)) // 4)
        if ol:
            ol.refill()
            ol.take(out_tokens)
        return json.dumps({
            "id": f"msg_{rid[4:]}", "type": "message", "role": "assistant",
            "model": body.get("model") or "stand-in", "stop_reason": "tool_use", "stop_sequence": None,
            "content": [{"type": "tool_use", "id": f"toolu_{rid[4:]}", "name": name, "input": verdict}],
            "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens},
        }).encode()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="standin",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--plan", default="{}", help="FaultPlan fields as a JSON object")
    args = ap.parse_args(argv)
    srv = StandIn(FaultPlan(**json.loads(args.plan)))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"PORT {await srv.serve(args.port)}", flush=True)
        await stop.wait()
        await srv.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
