"""Engine configuration: one typed object, every field with a sensible default.

>>> EngineConfig().session_timeout
1800.0
>>> EngineConfig(currency_rates={"USD": 0.8}).to_store_currency(10.0, "USD")
8.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import HOUR, MINUTE

__all__ = ["EngineConfig", "CurrencyError"]


class CurrencyError(ValueError):
    """An amount in a currency with no configured conversion rate."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    session_timeout: float = 30 * MINUTE        # inactivity that closes a session (event time)
    allowed_lateness: float = 15 * MINUTE       # watermark = max event time seen - this (docs/DOMAIN.md)
    max_future_skew: float = 6 * HOUR           # refuse events this far ahead of their receive time
    lifespan_years: float = 2.0                 # simple CLV = AOV x frequency x lifespan
    frequency_floor_days: float = 90.0          # frequency is measured over at least this tenure
    gap_ewma_alpha: float = 0.5                 # weight of the latest gap in the recent-gap average
    store_currency: str = "GBP"
    currency_rates: dict = field(default_factory=dict)   # currency -> rate into store currency
    discount_tolerance: float = 0.005           # paid below list price by more than this = discounted
    low_rating: int = 2                         # rating at or below this = bad experience

    def to_store_currency(self, amount: float, currency: str | None) -> float:
        if currency is None or currency == self.store_currency:
            return amount
        if type(currency) is not str:  # unknown fields are not schema-checked: e.g. a list
            raise CurrencyError(f"currency must be a string, got {type(currency).__name__}")
        rate = self.currency_rates.get(currency)
        if rate is None:
            raise CurrencyError(f"no conversion rate from {currency} to {self.store_currency}")
        return amount * rate
