"""Anthropic's Message Batches through the official SDK: create, poll, stream results, cancel.

Message Batches carry no metadata, so the local key travels in every ``custom_id``
(``<key>_<n>``). :meth:`AnthropicBatchClient.find` cannot read custom_ids before a batch ends, so
after a kill between the journal's intent record and the provider's answer it looks for a batch
created since the intent with the same number of requests: an ended one is confirmed by its
results' ids, a running one is adopted on that evidence alone and confirmed when it ends
(:class:`~tgrs_agents.paid.batch.ForeignBatch` is raised from :meth:`results` if its ids are not ours; the runner then
submits ours). Residual risk, stated plainly: if the killed submission never reached Anthropic and
another process on the same key created a batch of exactly the same size in that window, we wait
for that batch to end before submitting ours (a delay, never a double charge or a lost item); if
both reached Anthropic, ours is adopted only when it is the newest such batch, else ours runs
unread and is paid for once more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from ..errors import TeacherError
from .batch import (
    ANTHROPIC_LIMITS,
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
    split_custom_id,
)
from .call import Paid
from .cost import Price

FIND_SLACK_S = 600.0


def _ts(d: datetime | None) -> float:
    return d.timestamp() if d else 0.0


class AnthropicBatchClient(SdkBatchClient):
    def __init__(self, client: Any, *, name: str = "anthropic-batch", price: Price | None = None,
                 limits: BatchLimits = ANTHROPIC_LIMITS) -> None:
        import anthropic

        super().__init__(client, anthropic, name=name, price=price, limits=limits)

    def item_bytes(self, item: Item) -> int:
        return json_bytes({"custom_id": item[0], "params": item[1]})

    async def submit(self, items: Sequence[Item], key: str) -> str:
        try:
            b = await self._client.messages.batches.create(
                requests=[{"custom_id": cid, "params": body} for cid, body in items])
        except self._sdk.AnthropicError as e:
            raise self._classified(e) from e
        return str(b.id)

    async def find(self, key: str, n_items: int, since: float) -> str | None:
        try:
            async for b in self._client.messages.batches.list(limit=100):  # newest first
                if _ts(b.created_at) < since - FIND_SLACK_S:
                    return None
                rc = b.request_counts
                if rc.processing + rc.succeeded + rc.errored + rc.canceled + rc.expired != n_items:
                    continue
                if b.processing_status != "ended" or await self._ours(b.id, key):
                    return str(b.id)
        except self._sdk.AnthropicError as e:
            raise self._classified(e) from e
        return None

    async def _ours(self, batch_id: str, key: str) -> bool:
        async for r in await self._client.messages.batches.results(batch_id):
            return (split_custom_id(r.custom_id) or ("",))[0] == key
        return False

    async def poll(self, batch_id: str) -> BatchStatus:
        try:
            b = await self._client.messages.batches.retrieve(batch_id)
        except self._sdk.AnthropicError as e:
            raise self._classified(e) from e
        rc = b.request_counts
        counts = {"processing": rc.processing, "succeeded": rc.succeeded, "errored": rc.errored,
                  "canceled": rc.canceled, "expired": rc.expired}
        state: State
        if b.processing_status == "in_progress":
            state = "running"
        elif b.processing_status == "canceling":
            state = "cancelling"
        elif b.cancel_initiated_at is not None:
            state = "cancelled"
        elif rc.expired and not (rc.succeeded or rc.errored):
            state = "expired"
        else:
            state = "completed"  # expired items, if any, come back one by one as retryable errors
        return BatchStatus(batch_id, state, b.processing_status, _ts(b.created_at), counts)

    async def results(self, batch_id: str, key: str | None = None) -> AsyncIterator[Answer]:
        try:
            stream = await self._client.messages.batches.results(batch_id)
            async for r in stream:
                check_key(r.custom_id, key, batch_id)
                yield r.custom_id, self._answer(r.result)
        except self._sdk.AnthropicError as e:
            raise self._classified(e) from e

    def _answer(self, res: Any) -> Paid[Any] | TeacherError:
        if res.type == "succeeded":
            m = res.message
            block = next((b for b in m.content if getattr(b, "type", None) == "tool_use"), None)
            usage = priced(self.price, m.usage.input_tokens or 0, m.usage.output_tokens or 0)
            return Paid(getattr(block, "input", None), usage)
        if res.type == "errored":
            e = res.error.error
            etype = getattr(e, "type", "api_error")
            status = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                      "not_found_error": 404, "rate_limit_error": 429, "overloaded_error": 529}.get(etype, 500)
            return item_error(status, f"{etype} in batch: {getattr(e, 'message', '')}", teacher=self.name)
        expired = res.type == "expired"
        return item_error(None, f"batch item {res.type}", teacher=self.name, kind="timeout" if expired else "error",
                          retryable=expired)

    async def cancel(self, batch_id: str) -> None:
        try:
            await self._client.messages.batches.cancel(batch_id)
        except self._sdk.AnthropicError as e:
            raise self._classified(e) from e
