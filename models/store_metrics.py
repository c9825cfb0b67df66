"""Store-level metrics, kept incrementally: repeat-purchase rate, orders per customer, mean
days between orders, average (historical) CLV and first-purchase-month cohorts.

A cohort is the month of a customer's first order; for each cohort it counts the customers
and in which month after it (1, 2, 3 ...) their second and third orders came. Metrics of
several partitions add up with ``merge``.

>>> m = StoreMetrics()
>>> m.on_order(0, 0.0, None, 100.0)
>>> m.on_order(1, 40 * 86400.0, 0.0, 50.0, first_order_at=0.0)
>>> s = m.summary()
>>> s["repeat_purchase_rate"], s["orders_per_customer"], s["mean_days_between_orders"]
(1.0, 2.0, 40.0)
>>> m.cohorts["1970-01"]
{'customers': 1, 'second': {'1': 1}, 'third': {}}
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .clock import DAY

__all__ = ["StoreMetrics", "month_of"]


def month_of(t: float) -> str:
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return f"{d.year:04d}-{d.month:02d}"


def _months_between(a: str, b: str) -> int:
    return (int(b[:4]) - int(a[:4])) * 12 + int(b[5:7]) - int(a[5:7])


class StoreMetrics:
    __slots__ = ("customers", "repeat_customers", "orders", "gross_revenue", "refunded",
                 "gap_days_sum", "gaps", "cohorts")

    def __init__(self) -> None:
        self.customers = 0
        self.repeat_customers = 0
        self.orders = 0
        self.gross_revenue = 0.0
        self.refunded = 0.0
        self.gap_days_sum = 0.0
        self.gaps = 0
        self.cohorts: dict[str, dict[str, Any]] = {}

    def on_order(self, orders_before: int, t: float, last_order_at: float | None, total: float,
                 first_order_at: float | None = None) -> None:
        """Count one new order of a customer who had ``orders_before`` orders."""
        self.orders += 1
        self.gross_revenue += total
        if orders_before == 0:
            self.customers += 1
            cohort = self.cohorts.setdefault(month_of(t), {"customers": 0, "second": {}, "third": {}})
            cohort["customers"] += 1
            return
        if last_order_at is not None and t > last_order_at:
            self.gap_days_sum += (t - last_order_at) / DAY
            self.gaps += 1
        if orders_before in (1, 2) and first_order_at is not None:
            first_month = month_of(first_order_at)
            cohort = self.cohorts.setdefault(first_month, {"customers": 0, "second": {}, "third": {}})
            which = "second" if orders_before == 1 else "third"
            k = str(_months_between(first_month, month_of(t)))
            cohort[which][k] = cohort[which].get(k, 0) + 1
            if orders_before == 1:
                self.repeat_customers += 1

    def on_refund(self, amount: float) -> None:
        self.refunded += amount

    def merge(self, other: StoreMetrics) -> StoreMetrics:
        out = StoreMetrics.from_dict(self.to_dict())
        for name in ("customers", "repeat_customers", "orders", "gross_revenue", "refunded",
                     "gap_days_sum", "gaps"):
            setattr(out, name, getattr(out, name) + getattr(other, name))
        for month, c in other.cohorts.items():
            mine = out.cohorts.setdefault(month, {"customers": 0, "second": {}, "third": {}})
            mine["customers"] += c["customers"]
            for which in ("second", "third"):
                for k, n in c[which].items():
                    mine[which][k] = mine[which].get(k, 0) + n
        return out

    def summary(self) -> dict[str, Any]:
        n = self.customers
        return {
            "customers": n,
            "orders": self.orders,
            "repeat_purchase_rate": self.repeat_customers / n if n else 0.0,
            "orders_per_customer": self.orders / n if n else 0.0,
            "mean_days_between_orders": self.gap_days_sum / self.gaps if self.gaps else None,
            "net_revenue": self.gross_revenue - self.refunded,
            "average_clv": (self.gross_revenue - self.refunded) / n if n else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__ if name != "cohorts"}
        d["cohorts"] = {m: {"customers": c["customers"], "second": dict(c["second"]),
                            "third": dict(c["third"])} for m, c in self.cohorts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreMetrics:
        m = cls()
        for name in cls.__slots__:
            if name in d:
                setattr(m, name, d[name])
        m.cohorts = {k: {"customers": v["customers"], "second": dict(v["second"]),
                         "third": dict(v["third"])} for k, v in d.get("cohorts", {}).items()}
        return m
