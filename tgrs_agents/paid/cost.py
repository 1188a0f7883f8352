"""Prices and the run budget.

Prices are USD per million tokens. :data:`DEFAULT_PRICES` are the vendors' published list prices
for common judge models as read on :data:`PRICES_READ_ON` (standard tier, no cache discounts;
batch prices are :func:`batch_price_for`, :data:`BATCH_SHARE` of these); a teacher file's
``price_input_per_mtok`` / ``price_output_per_mtok`` always win. Check them
before you trust a bill to them.

The :class:`Budget` is checked *before* each call: a call starts only if what was spent plus what
calls in flight may still spend plus this call's estimate stays within the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BudgetExhausted

PRICES_READ_ON = "2025-06-01"

# model prefix -> (input, output) USD per million tokens
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-haiku-4": (1.00, 5.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


def default_price(model: str) -> tuple[float, float] | None:
    """The list price of ``model`` by longest matching prefix, or None if unknown."""
    best = None
    for prefix, price in DEFAULT_PRICES.items():
        if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, price)
    return best[1] if best else None


# batch APIs (OpenAI Batch, Anthropic Message Batches) bill this share of the standard price, for
# every model above, as read on PRICES_READ_ON; a model prefix listed here bills its own share
BATCH_SHARE = 0.5
BATCH_SHARES: dict[str, float] = {}


def batch_price_for(model: str, input_per_mtok: float | None = None,
                    output_per_mtok: float | None = None) -> Price | None:
    """What one batched call of ``model`` costs: :func:`price_for` (the online price, a teacher
    file's own prices winning) times the batch share."""
    online = price_for(model, input_per_mtok, output_per_mtok)
    if online is None:
        return None
    prefixes = [p for p in BATCH_SHARES if model.startswith(p)]
    share = BATCH_SHARES[max(prefixes, key=len)] if prefixes else BATCH_SHARE
    return Price(online.input_per_mtok * share, online.output_per_mtok * share)


def price_for(model: str, input_per_mtok: float | None = None,
              output_per_mtok: float | None = None) -> Price | None:
    """The prices given, else the list price of ``model``; None when neither is known (the caller
    raises a ConfigError naming its own field: an unpriced call would make the budget meaningless)."""
    known = default_price(model) or (None, None)
    pin = input_per_mtok if input_per_mtok is not None else known[0]
    pout = output_per_mtok if output_per_mtok is not None else known[1]
    return None if pin is None or pout is None else Price(float(pin), float(pout))


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass
class Budget:
    """A spending cap in USD with reservations for calls in flight. ``limit_usd=None``: no cap."""

    limit_usd: float | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    refused: int = 0
    _next: int = 0
    _held: dict[int, float] = field(default_factory=dict)

    def reserve(self, estimate_usd: float) -> int:
        if self.limit_usd is not None and (
            self.spent_usd + self.reserved_usd + estimate_usd > self.limit_usd + 1e-12
        ):
            self.refused += 1
            raise BudgetExhausted(
                f"budget ${self.limit_usd:.4f}: spent ${self.spent_usd:.4f}, in flight "
                f"${self.reserved_usd:.4f}, next call estimated ${estimate_usd:.4f}"
            )
        self._next += 1
        self._held[self._next] = estimate_usd
        self.reserved_usd += estimate_usd
        return self._next

    def settle(self, token: int, actual_usd: float) -> None:
        self.reserved_usd -= self._held.pop(token, 0.0)
        self.spent_usd += actual_usd
