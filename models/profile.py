"""Applying purchase and feedback events to a customer's profile.

Each function takes the state, the validated event, its event time and the configuration
and updates the state in place. Amounts are converted to the store currency.

Orders are counted once per ``order_id`` (a shop that re-sends an order under a new event
id does not double count). Net revenue is gross revenue minus refunds and cancellations.
The mean gap between orders is ``(last - first) / (orders - 1)``, which does not depend on
the order in which orders arrive.
"""

from __future__ import annotations

from typing import Any

from .clock import DAY
from .config import EngineConfig
from .state import ORDERS_KEPT, CustomerState

__all__ = ["apply_order", "apply_cancellation", "apply_feedback", "is_discounted"]


def is_discounted(event: dict[str, Any], tolerance: float) -> tuple[bool, bool]:
    """Return (discounted, price_known) for an order.

    Discounted: an order-level discount or coupon, or a line paid below its list price.
    ``price_known`` is False when no line carries a list price and there is no discount,
    so the order cannot be called full price either.

    >>> is_discounted({"discount": 0, "lines": [{"price": 9.0, "list_price": 10.0}]}, 0.005)
    (True, True)
    >>> is_discounted({"discount": 0, "lines": [{"price": 10.0, "list_price": 10.0}]}, 0.005)
    (False, True)
    >>> is_discounted({"lines": [{"price": 10.0}]}, 0.005)
    (False, False)
    """
    if (event.get("discount") or 0) > 0 or event.get("coupon"):
        return True, True
    known = False
    for line in event.get("lines") or ():
        lp = line.get("list_price")
        if (line.get("discount") or 0) > 0:
            return True, True
        if lp is not None:
            known = True
            if lp > 0 and line.get("price", lp) < lp * (1 - tolerance):
                return True, True
    return False, known


def apply_order(state: CustomerState, event: dict[str, Any], t: float, cfg: EngineConfig) -> bool:
    """Apply ``order_completed``; return False when the order id was already counted."""
    order_id = str(event["order_id"])
    if order_id in state.recent_orders:
        return False
    total = cfg.to_store_currency(float(event["total"]), event.get("currency"))
    state.recent_orders[order_id] = [round(total, 2), False]
    if len(state.recent_orders) > ORDERS_KEPT:
        del state.recent_orders[next(iter(state.recent_orders))]
    state.orders += 1
    state.gross_revenue += total
    state.items_bought += sum(int(line.get("quantity", 1)) for line in event.get("lines") or ())
    discounted, known = is_discounted(event, cfg.discount_tolerance)
    if discounted:
        state.discounted_orders += 1
    elif known:
        state.full_price_orders += 1
    if event.get("coupon"):
        state.coupon_orders += 1
    if state.first_order_at is None or t < state.first_order_at:
        state.first_order_at = t
    last = state.last_order_at
    if last is None:
        state.last_order_at = t
    elif t > last:
        gap = (t - last) / DAY
        state.last_gap_days = gap
        a = cfg.gap_ewma_alpha
        state.ewma_gap_days = gap if state.ewma_gap_days is None else a * gap + (1 - a) * state.ewma_gap_days
        state.last_order_at = t
    state.abandoned_cart_value = 0.0
    return True


def apply_cancellation(state: CustomerState, event: dict[str, Any], cfg: EngineConfig) -> bool:
    """Apply ``order_cancelled`` / ``order_refunded``; return False for a repeated cancellation."""
    order_id = str(event["order_id"])
    known = state.recent_orders.get(order_id)
    is_cancel = event["type"] == "order_cancelled"
    if is_cancel and known is not None and known[1]:
        return False
    amount = event.get("refund_amount")
    if amount is not None:
        amount = cfg.to_store_currency(float(amount), event.get("currency"))
    elif known is not None:
        amount = known[0]
    else:
        amount = sum(float(line.get("price", 0)) * int(line.get("quantity", 1))
                     for line in event.get("lines") or ())
        amount = cfg.to_store_currency(amount, event.get("currency"))
    state.refunded_amount += amount
    if is_cancel:
        state.cancelled_orders += 1
        if known is not None:
            known[1] = True
    else:
        state.refunds += 1
    return True


def apply_feedback(state: CustomerState, event: dict[str, Any], t: float, cfg: EngineConfig) -> None:
    """Apply ``review_submitted``, ``support_ticket`` or ``delivery_issue``."""
    kind = event["type"]
    if kind == "review_submitted":
        rating = int(event["rating"])
        state.reviews += 1
        state.rating_sum += rating
        if state.last_rating_at is None or t >= state.last_rating_at:
            state.last_rating = rating
            state.last_rating_at = t
        if rating <= cfg.low_rating:
            state.low_ratings += 1
            _bad_experience(state, t)
    elif kind == "support_ticket":
        state.tickets += 1
        if not event.get("resolved", False):
            state.unresolved_tickets += 1
            if event.get("severity") in ("high", "critical"):
                _bad_experience(state, t)
    elif kind == "delivery_issue":
        state.delivery_issues += 1
        _bad_experience(state, t)


def _bad_experience(state: CustomerState, t: float) -> None:
    if state.last_bad_experience_at is None or t > state.last_bad_experience_at:
        state.last_bad_experience_at = t
