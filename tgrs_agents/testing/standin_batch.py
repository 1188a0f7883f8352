"""The stand-in's batch routes: OpenAI's Files + Batch API and Anthropic's Message Batches.

Each request in a batch is answered by the stand-in's own brain, in the same chat-completion /
message body as online, so a verdict is the same whichever way it was asked. Time drives a batch:
``FaultPlan.batch_delay_s`` after its creation it is done (``clock`` is ``time.time``; a test may
swap in a fake one). Faults, all from the plan: ``p_batch_item_error`` (an item fails alone),
``batch_expire_s`` (a batch not done by then expires: the share of its items processed in that time
succeeded, the rest expired), ``p_batch_cancel`` (the provider cancels a batch half-way) and
``batch_cancel_s`` (how long ``cancelling`` lasts). ``script`` forces the next batch-route answers:
``"500"``/``"429"``/``"401"`` (nothing happens), ``"drop_after"`` (the request takes effect, then
the connection is closed unanswered: a client killed between the provider's act and its reply),
``"ok"`` (answered as usual).

OpenAI: ``POST /v1/files`` (multipart, purpose=batch), ``GET /v1/files/{id}[/content]``, ``POST
/v1/batches``, ``GET /v1/batches[/{id}]``, ``POST /v1/batches/{id}/cancel``; statuses validating ->
in_progress -> finalizing -> completed | failed | expired | cancelling -> cancelled; output and
error files in OpenAI's line shape. Anthropic: ``POST /v1/messages/batches``, ``GET
/v1/messages/batches[/{id}]``, ``POST .../{id}/cancel``, ``GET .../{id}/results`` (the
``results_url``); in_progress -> canceling -> ended, results succeeded/errored/canceled/expired.
"""

from __future__ import annotations

import collections
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..chat import content_text

if TYPE_CHECKING:
    from .standin import StandIn

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # Anthropic's rule; OpenAI's is looser
_ROUTE = re.compile(r"^/v1/(files|batches|messages/batches)(?:/([^/]+))?(?:/(content|cancel|results))?$")
Resp = tuple[int, dict[str, str], bytes] | None


@dataclass
class _Batch:
    id: str
    anth: bool
    created: float
    items: list[tuple[str, dict]]
    metadata: dict | None = None
    input_file_id: str = ""
    endpoint: str = "/v1/chat/completions"
    cancel_at: float | None = None  # when cancellation was asked (by us or by the provider)
    provider_cancel_at: float | None = None
    errors: list[dict] | None = None  # OpenAI validation errors: the batch failed
    final: str | None = None  # the terminal status once reached
    ended: float | None = None
    results: list[tuple[str, str, Any]] = field(default_factory=list)  # (custom_id, kind, payload)
    files: tuple[str | None, str | None] = (None, None)


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _multipart(ctype: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        return {}
    out = {}
    for part in raw.split(b"--" + m.group(1).encode())[1:]:
        head, _, body = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if name:
            fname = re.search(rb'filename="([^"]*)"', head)
            out[name.group(1).decode()] = (fname.group(1).decode() if fname else None, body[:-2])
    return out


class BatchStandIn:
    """Batch state of one :class:`~tgrs_agents.testing.standin.StandIn` (``srv.batches``)."""

    def __init__(self, srv: StandIn) -> None:
        self.srv = srv
        self.clock: Callable[[], float] = time.time
        self.script: collections.deque[str] = collections.deque()
        self.files: dict[str, dict] = {}
        self.all: dict[str, _Batch] = {}  # creation order, both providers
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n:08d}{random.Random(self._n).getrandbits(32):08x}"

    @staticmethod
    def handles(path: str) -> bool:
        return bool(_ROUTE.match(path))

    def _err(self, anth: bool, status: int, etype: str, msg: str) -> Resp:
        if anth:
            return status, {}, json.dumps({"type": "error", "error": {"type": etype, "message": msg}}).encode()
        return status, {}, json.dumps({"error": {"message": msg, "type": etype, "param": None,
                                                 "code": None}}).encode()

    async def dispatch(self, method: str, path: str, query: str, headers: dict[str, str], raw: bytes) -> Resp:
        m = _ROUTE.match(path)
        assert m is not None
        kind, oid, action = m.groups()
        anth = kind == "messages/batches"
        self.srv.stats["batch_requests"] += 1
        has_key = headers.get("authorization", "").startswith("Bearer ") or bool(headers.get("x-api-key"))
        forced = self.script.popleft() if self.script else None
        if not has_key or forced == "401":
            return self._err(anth, 401, "authentication_error" if anth else "invalid_request_error",
                             "Invalid API key.")
        if forced in ("500", "429"):
            return self._err(anth, int(forced), "rate_limit_error" if forced == "429" else "api_error",
                             f"scripted {forced}")
        resp = self._route(method, kind, oid, action, parse_qs(query), headers, raw)
        return None if forced == "drop_after" else resp

    def _route(self, method: str, kind: str, oid: str | None, action: str | None,
               q: dict[str, list[str]], headers: dict[str, str], raw: bytes) -> Resp:
        anth = kind == "messages/batches"
        if kind == "files":
            if method == "POST" and oid is None:
                return self._upload(headers.get("content-type", ""), raw)
            if method == "GET" and oid in self.files:
                f = self.files[oid]
                if action == "content":
                    return 200, {"content-type": "application/octet-stream"}, f["data"]
                return 200, {}, json.dumps({k: v for k, v in f.items() if k != "data"}).encode()
            return self._err(False, 404, "invalid_request_error", f"No such File object: {oid}")
        if method == "POST" and oid is None:
            return self._create(anth, json.loads(raw or b"{}"))
        if method == "GET" and oid is None:
            return self._list(anth, q)
        b = self.all.get(oid or "")
        if b is None or b.anth != anth:
            return self._err(anth, 404, "not_found_error" if anth else "invalid_request_error",
                             f"No batch found with id '{oid}'.")
        if method == "POST" and action == "cancel":
            self._advance(b)
            if b.final is None and b.cancel_at is None:
                b.cancel_at = self.clock()
        elif method == "GET" and action == "results" and anth:
            self._advance(b)
            if b.final is None:
                return self._err(True, 400, "invalid_request_error", "Batch is still processing.")
            lines = [json.dumps({"custom_id": c, "result": self._an_result(k, p)}) for c, k, p in b.results]
            return 200, {"content-type": "application/binary"}, "\n".join(lines).encode() + b"\n"
        elif method != "GET" or action is not None:
            return self._err(anth, 404, "not_found_error", "no such route")
        return 200, {}, json.dumps(self._view(b)).encode()

    # ----- OpenAI files -------------------------------------------------------------------------------
    def _upload(self, ctype: str, raw: bytes) -> Resp:
        parts = _multipart(ctype, raw)
        if "file" not in parts or parts.get("purpose", (None, b""))[1] != b"batch":
            return self._err(False, 400, "invalid_request_error", "expected a 'file' and purpose=batch")
        return 200, {}, json.dumps(self._new_file(parts["file"][0] or "upload.jsonl", parts["file"][1],
                                                  "batch")).encode()

    def _new_file(self, name: str, data: bytes, purpose: str) -> dict:
        fid = self._id("file-")
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(self.clock()),
                           "filename": name, "purpose": purpose, "status": "processed", "data": data}
        return {k: v for k, v in self.files[fid].items() if k != "data"}

    # ----- creation, time, results --------------------------------------------------------------------
    def _create(self, anth: bool, body: dict) -> Resp:
        now, p = self.clock(), self.srv.plan
        if anth:
            reqs = body.get("requests")
            if not isinstance(reqs, list) or not reqs:
                return self._err(True, 400, "invalid_request_error", "requests: expected a non-empty list")
            ids = [r.get("custom_id") for r in reqs]
            if not all(isinstance(c, str) and _CUSTOM_ID.match(c) for c in ids) or len(set(ids)) < len(ids):
                return self._err(True, 400, "invalid_request_error", "custom_id: unique, ^[a-zA-Z0-9_-]{1,64}$")
            b = _Batch(self._id("msgbatch_"), True, now, [(r["custom_id"], r.get("params") or {}) for r in reqs])
        else:
            f = self.files.get(body.get("input_file_id", ""))
            if f is None:
                return self._err(False, 400, "invalid_request_error", "input_file_id: no such file")
            if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
                return self._err(False, 400, "invalid_request_error", "endpoint/completion_window unsupported")
            b = _Batch(self._id("batch_"), False, now, [], metadata=body.get("metadata"),
                       input_file_id=f["id"], endpoint=body["endpoint"])
            b.errors = self._parse_input(b, f["data"])
        rng = random.Random(f"{p.seed}:{b.id}")
        if rng.random() < p.p_batch_cancel:
            b.provider_cancel_at = now + p.batch_delay_s / 2
        self.all[b.id] = b
        self.srv.stats["batches"] += 1
        self.srv.stats["batch_items"] += len(b.items)
        return 200, {}, json.dumps(self._view(b)).encode()

    def _parse_input(self, b: _Batch, data: bytes) -> list[dict] | None:
        errors, seen = [], set()
        for n, line in enumerate(data.decode().splitlines(), 1):
            try:
                rec = json.loads(line)
                cid = rec["custom_id"]
                assert rec["url"] == b.endpoint and rec["method"] == "POST" and isinstance(rec["body"], dict)
                assert cid not in seen
            except (ValueError, KeyError, TypeError, AssertionError):
                errors.append({"code": "invalid_request", "line": n, "param": None,
                               "message": "each line needs a unique custom_id, method POST, the url and a body"})
                continue
            seen.add(cid)
            b.items.append((cid, rec["body"]))
        return errors or (None if b.items else [{"code": "empty_file", "line": None, "param": None,
                                                 "message": "the input file has no requests"}])

    def _advance(self, b: _Batch) -> None:
        """Bring ``b`` up to the clock: reach its terminal status and compute its results once."""
        if b.final is not None:
            return
        now, p = self.clock(), self.srv.plan
        if b.errors:
            b.final, b.ended = "failed", now
            return
        delay = p.batch_delay_s
        if b.provider_cancel_at is not None and b.cancel_at is None and now >= b.provider_cancel_at:
            b.cancel_at = b.provider_cancel_at
        if b.cancel_at is not None:
            end, status = (b.cancel_at + p.batch_cancel_s), ("canceled" if b.anth else "cancelled")
            upto = b.cancel_at
        elif p.batch_expire_s is not None and delay > p.batch_expire_s:
            end, status, upto = b.created + p.batch_expire_s, "expired", b.created + p.batch_expire_s
        else:
            end, status, upto = b.created + delay, ("ended" if b.anth else "completed"), b.created + delay
        if now < end:
            return
        full = delay <= 0 or upto >= b.created + delay  # as computed: the ratio below may round under 1
        done = len(b.items) if full else int(len(b.items) * (upto - b.created) / delay)
        left = "canceled" if status in ("canceled", "cancelled") else "expired"
        for i, (cid, body) in enumerate(b.items):
            b.results.append((cid, *self._answer(b, cid, body)) if i < done else (cid, left, None))
        b.final, b.ended = status, end
        if not b.anth:
            self._write_files(b)

    def _answer(self, b: _Batch, cid: str, body: dict) -> tuple[str, Any]:
        """One item through the online path's brain: ("ok", body) or ("error", (status, type, msg))."""
        srv, p = self.srv, self.srv.plan
        rng = random.Random(f"{p.seed}:{b.id}:{cid}")
        text = lambda c: content_text(c, sep="\n")  # noqa: E731  the online path's reader
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            return "error", (400, "invalid_request_error", "Invalid request: 'messages' must be a list of objects.")
        if rng.random() < p.p_batch_item_error:
            return "error", (500, "api_error" if b.anth else "server_error", "The server had an error.")
        system = text(body.get("system")) if b.anth else ""
        texts = [text(m.get("content")) for m in msgs if m.get("role") in ("user", "system")]
        in_tokens = max(1, (len(system) + sum(len(text(m.get("content"))) for m in msgs)) // 4)
        verdict = srv.brain("\n".join([system, *texts]))
        rid = f"req_{rng.getrandbits(48):012x}"
        if b.anth:
            return "ok", json.loads(srv._anthropic_message(body, rid, verdict, in_tokens, None, "ok"))
        return "ok", json.loads(srv._openai_completion(body, rid, verdict, in_tokens, "ok"))

    def _write_files(self, b: _Batch) -> None:
        out: list[str] = []
        err: list[str] = []
        for n, (cid, kind, payload) in enumerate(b.results):
            line: dict[str, Any] = {"id": f"batch_req_{b.id[6:]}{n:06d}", "custom_id": cid, "response": None,
                                    "error": None}
            if kind in ("expired", "canceled"):
                line["error"] = {"code": "batch_expired" if kind == "expired" else "batch_cancelled", "message": (
                    "This request could not be executed before the completion window expired."
                    if kind == "expired" else "This request was cancelled before it was executed.")}
            elif kind == "error":
                status, etype, msg = payload
                line["response"] = {"status_code": status, "request_id": f"req_{n:012x}", "body": {
                    "error": {"message": msg, "type": etype, "param": None, "code": None}}}
            else:
                line["response"] = {"status_code": 200, "request_id": payload["id"][9:], "body": payload}
            (out if kind == "ok" else err).append(json.dumps(line))
        b.files = tuple(self._new_file(f"batch_{b.id}_{what}.jsonl", "\n".join(lines).encode() + b"\n",
                                       "batch_output")["id"] if lines else None
                        for what, lines in (("output", out), ("error", err)))  # type: ignore[assignment]

    @staticmethod
    def _an_result(kind: str, payload: Any) -> dict:
        if kind == "ok":
            return {"type": "succeeded", "message": payload}
        if kind == "error":
            return {"type": "errored", "error": {"type": "error", "error": {"type": payload[1],
                                                                            "message": payload[2]}}}
        return {"type": kind}

    # ----- views ------------------------------------------------------------------------------------
    def _view(self, b: _Batch) -> dict:
        self._advance(b)
        now, p, n = self.clock(), self.srv.plan, len(b.items)
        expires = b.created + (p.batch_expire_s if p.batch_expire_s is not None else 86_400)
        kinds = collections.Counter(k for _, k, _ in b.results)
        if b.anth:
            return {"id": b.id, "type": "message_batch", "created_at": _iso(b.created), "expires_at": _iso(expires),
                    "processing_status": "ended" if b.final else ("canceling" if b.cancel_at is not None
                                                                   else "in_progress"),
                    "cancel_initiated_at": _iso(b.cancel_at), "ended_at": _iso(b.ended), "archived_at": None,
                    "request_counts": {"processing": 0 if b.final else n, "succeeded": kinds["ok"],
                                       "errored": kinds["error"], "canceled": kinds["canceled"],
                                       "expired": kinds["expired"]},
                    "results_url": (f"{self.srv.url_anthropic}/v1/messages/batches/{b.id}/results"
                                    if b.final else None)}
        el, d = now - b.created, p.batch_delay_s
        status = b.final or ("cancelling" if b.cancel_at is not None else "validating" if el < 0.1 * d
                             else "in_progress" if el < 0.9 * d else "finalizing")
        done = kinds["ok"] + kinds["error"] if b.final else (min(n, int(n * el / d)) if d > 0 else 0)
        stamp = {"completed": "completed_at", "failed": "failed_at", "expired": "expired_at",
                 "cancelled": "cancelled_at"}
        view = {"id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": None,
                "input_file_id": b.input_file_id, "completion_window": "24h", "status": status,
                "output_file_id": b.files[0], "error_file_id": b.files[1], "created_at": int(b.created),
                "in_progress_at": None if status == "validating" or b.errors else int(b.created + 0.1 * d),
                "expires_at": int(expires), "cancelling_at": None if b.cancel_at is None else int(b.cancel_at),
                "metadata": b.metadata, "request_counts": {"total": n, "completed": kinds["ok"] if b.final else done,
                                                           "failed": kinds["error"]}}
        if b.final:
            view[stamp[b.final]] = int(b.ended or now)
        if b.errors:
            view["errors"] = {"object": "list", "data": b.errors}
        return view

    def _list(self, anth: bool, q: dict[str, list[str]]) -> Resp:
        rows = [b for b in reversed(self.all.values()) if b.anth == anth]  # newest first
        after = (q.get("after_id") or q.get("after") or [""])[0] or None
        if after is not None:
            ids = [b.id for b in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        limit = int((q.get("limit") or ["20"])[0])
        page = [self._view(b) for b in rows[:limit]]
        body = {"data": page, "has_more": len(rows) > limit,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}
        if not anth:
            body["object"] = "list"
        return 200, {}, json.dumps(body).encode()
