"""Providers' batch APIs, one async interface: submit, poll, results, cancel, find.

Both providers sell batch processing at about half the online price for answers within 24 h. A
:class:`BatchClient` (:mod:`~tgrs_agents.paid.batch_openai`, :mod:`~tgrs_agents.paid.batch_anthropic`)
speaks one provider through its official SDK; :mod:`~tgrs_agents.paid.batch_runner` adds the run's
journal, resumption and resubmission on top. Each item's answer comes back as the online path's
:class:`~tgrs_agents.paid.call.Paid` body (the message content for OpenAI, the tool input for
Anthropic), priced at the batch price, or as a classified :class:`~tgrs_agents.errors.TeacherError`:
``retryable`` items (a 5xx, an expired or missing one) are worth resubmitting, the rest are not.

``custom_id`` is ``<key>_<n>``: the batch's local key (which the run journals before submission)
and the item's place in it, so ids fit Anthropic's ``^[a-zA-Z0-9_-]{1,64}$`` whatever a candidate's
id is, and every answer names the batch it was asked in.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import TeacherError
from ..types import Usage
from .call import Paid
from .cost import Price
from .sdk_errors import classify_sdk_error, classify_status

State = Literal["running", "cancelling", "completed", "failed", "expired", "cancelled"]
ENDED: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})
Item = tuple[str, dict[str, Any]]  # (custom_id, the request body as the online call sends it)
Answer = tuple[str, "Paid[Any] | TeacherError"]


class ForeignBatch(Exception):
    """An adopted batch whose answers carry another key: not ours after all (see batch_anthropic)."""


def check_key(cid: str, key: str | None, batch_id: str) -> None:
    if key is not None and (split_custom_id(cid) or ("",))[0] != key:
        raise ForeignBatch(f"batch {batch_id} holds custom_id {cid!r}, not one of key {key!r}")


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """A provider's ceiling for one batch: requests, and bytes of what is uploaded."""

    max_requests: int
    max_bytes: int


OPENAI_LIMITS = BatchLimits(50_000, 200 * 1024 * 1024)  # per input file
ANTHROPIC_LIMITS = BatchLimits(100_000, 256 * 1024 * 1024)  # per create request


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """One poll: the provider's own status word, ours (``state``), and its request counts."""

    batch_id: str
    state: State
    provider_status: str
    created_at: float
    counts: dict[str, int] = field(default_factory=dict)
    errors: str | None = None  # why a batch failed as a whole (invalid input file)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class BatchClient(Protocol):
    """One provider's batch API. Failures of the calls themselves raise classified TeacherErrors."""

    name: str
    limits: BatchLimits

    def item_bytes(self, item: Item) -> int: ...

    async def submit(self, items: Sequence[Item], key: str) -> str: ...

    async def find(self, key: str, n_items: int, since: float) -> str | None: ...

    async def poll(self, batch_id: str) -> BatchStatus: ...

    def results(self, batch_id: str, key: str | None = None) -> AsyncIterator[Answer]:
        """Each item's answer; with ``key``, raises :class:`ForeignBatch` on an id that is not its."""
        ...

    async def cancel(self, batch_id: str) -> None: ...

    async def aclose(self) -> None: ...


class SdkBatchClient:
    """What both providers' batch clients share: the SDK client, its error classes (classified
    as online calls are), the price and the provider's limits."""

    def __init__(self, client: Any, sdk: Any, *, name: str, price: Price | None, limits: BatchLimits) -> None:
        self._sdk = sdk
        self._client = client
        self.name = name
        self.price = price
        self.limits = limits

    def _classified(self, exc: BaseException) -> BaseException:
        return classify_sdk_error(exc, self._sdk, self.name) or exc

    async def aclose(self) -> None:
        await self._client.close()


def custom_id(key: str, n: int) -> str:
    return f"{key}_{n}"


def split_custom_id(cid: str) -> tuple[str, int] | None:
    """(key, n) of a ``custom_id`` this module made; None for anyone else's."""
    key, _, n = cid.rpartition("_")
    return (key, int(n)) if key and n.isdigit() else None


def group(items: Sequence[Item], limits: BatchLimits, size: Any) -> list[list[Item]]:
    """Consecutive groups that each stay within ``limits`` (``size(item)``: its bytes uploaded)."""
    out: list[list[Item]] = []
    cur: list[Item] = []
    used = 0
    for it in items:
        n = size(it)
        if n > limits.max_bytes:
            raise ValueError(f"one request of {n} bytes is over the batch limit of {limits.max_bytes}")
        if cur and (len(cur) >= limits.max_requests or used + n > limits.max_bytes):
            out.append(cur)
            cur, used = [], 0
        cur.append(it)
        used += n
    if cur:
        out.append(cur)
    return out


def json_bytes(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode()) + 1  # one JSONL line


def item_error(status: int | None, message: str, *, teacher: str, kind: Any = None,
               retryable: bool | None = None) -> TeacherError:
    """A TeacherError for one item, classified like an online call's status."""
    r, k = classify_status(status) if status is not None else (False, "error")
    return TeacherError(message[:300], teacher=teacher, status=status,
                        retryable=r if retryable is None else retryable, kind=kind or k)


def priced(price: Price | None, input_tokens: int, output_tokens: int) -> Usage:
    cost = price.cost(input_tokens, output_tokens) if price else 0.0
    return Usage(requests=1, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost)
