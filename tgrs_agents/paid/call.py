"""The contract of a paid call: what an adapter declares, and what one call gives back.

Every remote call that costs money (an API judge, the OpenAI-compatible generator, the refiner)
is an adapter that makes *one attempt* and declares, typed, what the layer around it needs::

    endpoint_key   which limiter it shares (base URL + a hash of the key: one account)
    limits         the rates it was told (EndpointLimits)
    price          USD per million tokens (Price), for the budget and the bill
    max_attempts   its own bound on attempts (None: the run's RetryPolicy decides)
    estimate(req)  (input, output) tokens before the call, for the limiter and the budget
    cache_identity what decides its answers (None: never cached, e.g. sampling)
    call(req)      one attempt -> Paid(value, usage, headers); failures raise TeacherError

Nothing flows back into the adapter: response headers travel *out* on the :class:`Paid` result
or on the :class:`~tgrs_agents.errors.TeacherError`, and the rate-limit layer hands them to the
endpoint's limiter. :meth:`~tgrs_agents.paid.services.Services.stack` wraps an adapter in the layer
(:mod:`tgrs_agents.paid.wrappers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ..types import Candidate, Usage, Verdict
from .cost import Price
from .limits import EndpointLimits

T_co = TypeVar("T_co", covariant=True)
Req_contra = TypeVar("Req_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Paid(Generic[T_co]):
    """What a paid call returned: its value, the usage billed for it, the response's headers.

    After the retry layer, ``usage`` adds up every attempt (failed ones too) and carries the cost;
    ``cached`` says the value came from the ledger (no call, no cost).
    """

    value: T_co
    usage: Usage
    headers: Mapping[str, str] = field(default_factory=dict)
    cached: bool = False


@dataclass(frozen=True, slots=True)
class CacheIdentity:
    """What decides a call's answer (model, decoding, endpoint) and the hash of its prompt."""

    identity: dict[str, Any]
    prompt_hash: str


class PaidCall(Protocol[Req_contra, T_co]):
    """One paid call: an adapter, or an adapter inside any number of layers."""

    async def call(self, request: Req_contra) -> Paid[T_co]: ...


@runtime_checkable
class PaidAdapter(Protocol[Req_contra, T_co]):
    """The contract a paid adapter fulfils (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def endpoint_key(self) -> str: ...

    @property
    def limits(self) -> EndpointLimits: ...

    @property
    def price(self) -> Price: ...

    @property
    def max_attempts(self) -> int | None: ...

    def estimate(self, request: Req_contra) -> tuple[int, int]: ...

    def cache_identity(self) -> CacheIdentity | None: ...

    async def call(self, request: Req_contra) -> Paid[T_co]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class PaidJudge(PaidAdapter[Candidate, Verdict], Protocol):
    """A paid adapter that is also a teacher: an API judge, whose rank and config the panel reads
    (``config`` is a :class:`~tgrs_agents.teachers.base.TeacherConfig`; ``teachers/`` sits above
    ``paid/``, so it is not named here)."""

    @property
    def cost_rank(self) -> int: ...

    @property
    def config(self) -> Any: ...
