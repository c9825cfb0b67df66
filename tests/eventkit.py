"""Small builders of valid events for tests: ``Shop(start).order("c1", day=3, total=50)``."""

from __future__ import annotations

import itertools
from typing import Any

from models.clock import DAY, format_time, parse_time


class Shop:
    """Builds events with unique ids at ``start + day days + minute minutes``."""

    def __init__(self, start: str = "2025-01-01T00:00:00Z") -> None:
        self.t0 = parse_time(start)
        self._ids = itertools.count(1)

    def at(self, day: float = 0.0, minute: float = 0.0) -> float:
        return self.t0 + day * DAY + minute * 60.0

    def _env(self, kind: str, who: str, day: float, minute: float, anonymous: bool = False,
             **fields: Any) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "event_id": f"t-{next(self._ids)}", "type": kind, "schema_version": "1",
            "occurred_at": format_time(self.at(day, minute)),
        }
        ev["anonymous_id" if anonymous else "customer_id"] = who
        ev.update(fields)
        return ev

    def order(self, who: str, day: float, total: float, minute: float = 0.0, list_total: float | None = None,
              coupon: str | None = None, order_id: str | None = None, **extra: Any) -> dict[str, Any]:
        lp = total if list_total is None else list_total
        return self._env("order_completed", who, day, minute, order_id=order_id or f"o-{next(self._ids)}",
                         currency="GBP", subtotal=total, discount=0.0, shipping=0.0, tax=0.0, total=total,
                         coupon=coupon, lines=[{"product_id": "p1", "quantity": 1, "price": total,
                                                "list_price": lp}], **extra)

    def cancel(self, who: str, day: float, order_id: str, amount: float | None = None) -> dict[str, Any]:
        ev = self._env("order_cancelled", who, day, 0.0, order_id=order_id, reason="customer")
        if amount is not None:
            ev["refund_amount"] = amount
        return ev

    def refund(self, who: str, day: float, order_id: str, amount: float) -> dict[str, Any]:
        return self._env("order_refunded", who, day, 0.0, order_id=order_id, refund_amount=amount,
                         reason="damaged")

    def view(self, who: str, day: float, minute: float = 0.0, anonymous: bool = False, **extra: Any) -> dict[str, Any]:
        return self._env("page_view", who, day, minute, anonymous=anonymous, url="https://shop/x",
                         path="/x", page_type="product", **extra)

    def add(self, who: str, day: float, minute: float = 0.0, price: float = 20.0, anonymous: bool = False,
            product_id: str = "p1", **extra: Any) -> dict[str, Any]:
        return self._env("product_added", who, day, minute, anonymous=anonymous, cart_id="cart-1",
                         product_id=product_id, quantity=1, price=price, list_price=price, **extra)

    def review(self, who: str, day: float, rating: int) -> dict[str, Any]:
        return self._env("review_submitted", who, day, 0.0, product_id="p1", rating=rating)

    def delivery_issue(self, who: str, day: float) -> dict[str, Any]:
        return self._env("delivery_issue", who, day, 0.0, order_id="o", category="late",
                         severity="high", resolved=False)

    def erase(self, who: str, day: float) -> dict[str, Any]:
        return self._env("erasure_requested", who, day, 0.0)
