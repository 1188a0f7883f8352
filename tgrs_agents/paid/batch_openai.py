"""OpenAI's Batch API through the official SDK: upload a JSONL file, create, poll, read output/error files.

The local key rides in the batch's ``metadata`` (``tgrs_key``): after a kill between the journal's
intent record and the provider's answer, :meth:`OpenAIBatchClient.find` lists the recent batches
and adopts the one carrying the key, so nothing is submitted twice. The client is injected
(``openai.AsyncOpenAI`` with ``max_retries=0``: the run's one retry policy decides).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..errors import TeacherError
from .batch import (
    OPENAI_LIMITS,
    Answer,
    BatchLimits,
    BatchStatus,
    Item,
    SdkBatchClient,
    State,
    check_key,
    item_error,
    json_bytes,
    priced,
)
from .call import Paid
from .cost import Price

ENDPOINT = "/v1/chat/completions"
META_KEY = "tgrs_key"
FIND_SLACK_S = 600.0  # clocks differ: look this far before the intent record for the batch
_STATES: dict[str, State] = {"validating": "running", "in_progress": "running", "finalizing": "running",
                             "cancelling": "cancelling", "completed": "completed", "failed": "failed",
                             "expired": "expired", "cancelled": "cancelled"}


class OpenAIBatchClient(SdkBatchClient):
    def __init__(self, client: Any, *, name: str = "openai-batch", price: Price | None = None,
                 limits: BatchLimits = OPENAI_LIMITS) -> None:
        import openai

        super().__init__(client, openai, name=name, price=price, limits=limits)

    def _line(self, item: Item) -> dict:
        return {"custom_id": item[0], "method": "POST", "url": ENDPOINT, "body": item[1]}

    def item_bytes(self, item: Item) -> int:
        return json_bytes(self._line(item))

    async def submit(self, items: Sequence[Item], key: str) -> str:
        data = "".join(json.dumps(self._line(it), separators=(",", ":")) + "\n" for it in items).encode()
        try:
            f = await self._client.files.create(file=(f"{key}.jsonl", data), purpose="batch")
            b = await self._client.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window="24h",
                                                  metadata={META_KEY: key})
        except self._sdk.OpenAIError as e:
            raise self._classified(e) from e
        return str(b.id)

    async def find(self, key: str, n_items: int, since: float) -> str | None:
        try:
            async for b in self._client.batches.list(limit=100):  # newest first
                if (b.metadata or {}).get(META_KEY) == key:
                    return str(b.id)
                if b.created_at < since - FIND_SLACK_S:
                    return None
        except self._sdk.OpenAIError as e:
            raise self._classified(e) from e
        return None

    async def _retrieve(self, batch_id: str) -> Any:
        try:
            return await self._client.batches.retrieve(batch_id)
        except self._sdk.OpenAIError as e:
            raise self._classified(e) from e

    async def poll(self, batch_id: str) -> BatchStatus:
        b = await self._retrieve(batch_id)
        rc = b.request_counts
        counts = {"total": rc.total, "succeeded": rc.completed, "errored": rc.failed} if rc else {}
        errors = "; ".join(f"line {e.line}: {e.message}" for e in (b.errors.data or [])) if b.errors else None
        return BatchStatus(batch_id, _STATES.get(b.status, "running"), b.status, float(b.created_at), counts,
                           errors or None)

    async def results(self, batch_id: str, key: str | None = None) -> AsyncIterator[Answer]:
        b = await self._retrieve(batch_id)
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            try:
                text = (await self._client.files.content(file_id)).text
            except self._sdk.OpenAIError as e:
                raise self._classified(e) from e
            for raw in text.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    check_key(line["custom_id"], key, batch_id)
                    yield line["custom_id"], self._answer(line)

    def _answer(self, line: dict) -> Paid[Any] | TeacherError:
        err, resp = line.get("error"), line.get("response") or {}
        if err:  # batch_expired / batch_cancelled: never ran, never billed
            expired = err.get("code") == "batch_expired"
            return item_error(None, f"{err.get('code')}: {err.get('message')}", teacher=self.name,
                              kind="timeout" if expired else "error", retryable=expired)
        body, status = resp.get("body") or {}, int(resp.get("status_code") or 0)
        if status != 200:
            msg = ((body.get("error") or {}).get("message")) or "no message"
            return item_error(status, f"HTTP {status} in batch: {msg}", teacher=self.name)
        u = body.get("usage") or {}
        choices = body.get("choices") or [{}]
        content = ((choices[0] or {}).get("message") or {}).get("content")
        usage = priced(self.price, int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
        return Paid(content if content is not None else "null", usage)

    async def cancel(self, batch_id: str) -> None:
        try:
            await self._client.batches.cancel(batch_id)
        except self._sdk.OpenAIError as e:
            raise self._classified(e) from e
