"""Features: every metric of a customer as a flat dict at a point of event time.

This dict is the vocabulary of the segment rules (``models/segments.toml``) and the input
of the models. ``TIME_FEATURES`` are the features that grow linearly while a customer is
quiet (``days_since_last_order`` ...): the segment engine uses them to compute *when* a
rule will flip, so time-based segments fire on time without scanning customers.

Definitions (store currency, days of event time):
- ``aov`` = gross revenue / orders (value at purchase; refunds show in ``net_revenue``);
- ``purchase_frequency`` = orders per year over the customer's tenure, the tenure floored
  at ``frequency_floor_days`` so a new customer is not credited 365 orders a year;
- ``clv_historical`` = net revenue to date;
  ``clv_simple`` = aov x purchase_frequency x lifespan_years (the brief's simple formula);
- ``mean_days_between_orders`` = (last order - first order) / (orders - 1);
- ``expected_next_order_at`` = last order + recent (EWMA) gap, for customers with two orders or more.

>>> from models.state import CustomerState
>>> from models.config import EngineConfig
>>> s = CustomerState(key="c", customer_id="c", orders=2, gross_revenue=100.0,
...                   first_order_at=0.0, last_order_at=10 * 86400.0, ewma_gap_days=10.0)
>>> f = customer_features(s, 15 * 86400.0, EngineConfig())
>>> f["aov"], f["days_since_last_order"], f["days_overdue"]
(50.0, 5.0, -5.0)
"""

from __future__ import annotations

from typing import Any

from .clock import DAY, HOUR, MINUTE
from .config import EngineConfig
from .state import CustomerState

__all__ = ["ALL_GROUPS", "TIME_FEATURES", "FEATURE_NAMES", "customer_features",
           "expected_next_order_at", "feature_group", "time_anchors"]


def expected_next_order_at(state: CustomerState) -> float | None:
    if state.orders < 2 or state.last_order_at is None:
        return None
    gap = state.ewma_gap_days
    if gap is None:
        if state.first_order_at is None or state.last_order_at <= state.first_order_at:
            return None
        gap = (state.last_order_at - state.first_order_at) / DAY / (state.orders - 1)
    return state.last_order_at + gap * DAY


def _anchor_last_order(s: CustomerState) -> float | None:
    return s.last_order_at


def _anchor_first_order(s: CustomerState) -> float | None:
    return s.first_order_at


def _anchor_last_event(s: CustomerState) -> float | None:
    return s.last_event_at


def _anchor_last_abandon(s: CustomerState) -> float | None:
    return s.last_abandon_at


def _anchor_bad_experience(s: CustomerState) -> float | None:
    return s.last_bad_experience_at


# name -> (anchor of the state, seconds per unit): value = (now - anchor) / unit
TIME_FEATURES: dict[str, tuple[Any, float]] = {
    "days_since_last_order": (_anchor_last_order, DAY),
    "days_since_first_order": (_anchor_first_order, DAY),
    "days_overdue": (expected_next_order_at, DAY),
    "days_since_last_event": (_anchor_last_event, DAY),
    "minutes_since_last_event": (_anchor_last_event, MINUTE),
    "hours_since_last_abandon": (_anchor_last_abandon, HOUR),
    "days_since_last_bad_experience": (_anchor_bad_experience, DAY),
}


def time_anchors(state: CustomerState) -> dict[str, float | None]:
    return {name: fn(state) for name, (fn, _unit) in TIME_FEATURES.items()}


def customer_features(state: CustomerState, now: float, cfg: EngineConfig) -> dict[str, Any]:
    """Every metric of PRODUCT.md section 3 for ``state`` at event time ``now``."""
    orders = state.orders
    net_revenue = state.gross_revenue - state.refunded_amount
    aov = state.gross_revenue / orders if orders else 0.0
    first = state.first_order_at
    tenure = (now - first) / DAY if first is not None else None
    if orders:
        span = max(tenure or 0.0, cfg.frequency_floor_days)
        frequency = orders * 365.0 / span
    else:
        frequency = 0.0
    mean_gap = None
    if orders >= 2 and first is not None and state.last_order_at is not None:
        mean_gap = (state.last_order_at - first) / DAY / (orders - 1)
    last_abandon = state.last_abandon_at
    last_order = state.last_order_at
    has_abandoned = last_abandon is not None and (last_order is None or last_abandon > last_order)
    sess = state.session
    bad = state.last_bad_experience_at
    f: dict[str, Any] = {
        "anonymous": state.anonymous,
        "orders": orders,
        "net_orders": orders - state.cancelled_orders,
        "cancelled_orders": state.cancelled_orders,
        "refunds": state.refunds,
        "gross_revenue": state.gross_revenue,
        "refunded_amount": state.refunded_amount,
        "net_revenue": net_revenue,
        "aov": aov,
        "purchase_frequency": frequency,
        "tenure_days": tenure,  # = days_since_first_order, kept under its usual name
        "mean_days_between_orders": mean_gap,
        "last_gap_days": state.last_gap_days,
        "recent_gap_days": state.ewma_gap_days,
        "gap_trend": (state.ewma_gap_days / mean_gap) if mean_gap and state.ewma_gap_days is not None else None,
        "expected_next_order_at": expected_next_order_at(state),
        "discounted_share": state.discounted_orders / orders if orders else 0.0,
        "full_price_share": state.full_price_orders / orders if orders else 0.0,
        "coupon_share": state.coupon_orders / orders if orders else 0.0,
        "coupon_orders": state.coupon_orders,
        "items_bought": state.items_bought,
        "sessions": state.sessions,
        "page_views": state.page_views,
        "product_views": state.product_views,
        "searches": state.searches,
        "carts_started": state.carts_started,
        "carts_abandoned": state.carts_abandoned,
        "abandon_rate": state.carts_abandoned / state.carts_started if state.carts_started else 0.0,
        "checkouts_started": state.checkouts_started,
        "has_abandoned_cart": has_abandoned,
        "abandoned_cart_value": state.abandoned_cart_value if has_abandoned else 0.0,
        "reviews": state.reviews,
        "mean_rating": state.rating_sum / state.reviews if state.reviews else None,
        "last_rating": state.last_rating,
        "low_ratings": state.low_ratings,
        "tickets": state.tickets,
        "unresolved_tickets": state.unresolved_tickets,
        "delivery_issues": state.delivery_issues,
        "had_bad_experience": bad is not None,
        "positive_after_bad": (bad is not None and state.last_rating_at is not None
                               and state.last_rating_at > bad and (state.last_rating or 0) >= 4),
        "clv_historical": net_revenue,
        "clv_simple": aov * frequency * cfg.lifespan_years,
        "session_open": sess is not None,
        "session_events": sess["events"] if sess else 0,
        "session_minutes": (sess["last_at"] - sess["started_at"]) / MINUTE if sess else 0.0,
        "session_page_views": sess["page_views"] if sess else 0,
        "session_product_views": sess["product_views"] if sess else 0,
        "cart_items": sess["cart_items"] if sess else 0,
        "cart_value": sess["cart_value"] if sess else 0.0,
        "checkout_started": bool(sess and sess["checkout"]),
        "discount_seen": bool(sess and sess["discount_seen"]),
    }
    for name, (fn, unit) in TIME_FEATURES.items():
        anchor = fn(state)
        f[name] = None if anchor is None else (now - anchor) / unit
    return f


FEATURE_NAMES: frozenset[str] = frozenset(
    customer_features(CustomerState(key="_"), 0.0, EngineConfig()).keys()
) | {"churn_risk", "abandon_risk", "clv"}


# Which part of the state a feature reads. An event only re-evaluates the segments whose
# rules read a group it touched (plus those whose due time has come), which keeps the
# engine fast; ``Engine(full_evaluation=True)`` evaluates everything, for checking.
_PURCHASE = {
    "orders", "net_orders", "cancelled_orders", "refunds", "gross_revenue", "refunded_amount",
    "net_revenue", "aov", "purchase_frequency", "tenure_days", "mean_days_between_orders",
    "last_gap_days", "recent_gap_days", "gap_trend", "expected_next_order_at", "discounted_share",
    "full_price_share", "coupon_share", "coupon_orders", "items_bought", "clv_historical",
    "clv_simple", "days_since_last_order", "days_since_first_order", "days_overdue",
}
_FEEDBACK = {
    "reviews", "mean_rating", "last_rating", "low_ratings", "tickets", "unresolved_tickets",
    "delivery_issues", "had_bad_experience", "positive_after_bad", "days_since_last_bad_experience",
}
_SCORES = {"churn_risk", "abandon_risk", "clv"}
_BROWSE = {"anonymous", "sessions", "page_views", "product_views", "searches",
           "days_since_last_event", "minutes_since_last_event"}


def feature_group(name: str) -> str:
    """``purchase``, ``feedback``, ``scores``, ``browse`` or ``session`` (carts, open session).

    >>> feature_group("net_revenue"), feature_group("cart_items"), feature_group("churn_risk")
    ('purchase', 'session', 'scores')
    """
    if name in _PURCHASE:
        return "purchase"
    if name in _FEEDBACK:
        return "feedback"
    if name in _SCORES:
        return "scores"
    if name in _BROWSE:
        return "browse"
    return "session"


ALL_GROUPS = frozenset({"purchase", "feedback", "scores", "browse", "session"})
