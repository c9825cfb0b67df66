"""Per-key state: everything the engine keeps about one customer (or anonymous visitor).

The state is a flat record of numbers, a few small dicts and the open session, so that it
serialises to a compact JSON object (``to_dict`` / ``from_dict``) that the streaming shell
stores in a table. Unknown fields in a stored dict are ignored and missing ones take their
defaults, so a stored state survives the addition of a field.

>>> s = CustomerState(key="c1", customer_id="c1")
>>> s.orders
0
>>> CustomerState.from_dict(s.to_dict()) == s
True
>>> old = CustomerState.from_dict({"key": "c2", "orders": 3, "a_later_field": 1})
>>> old.orders, old.sessions
(3, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["ALIASES_KEPT", "CustomerState", "ORDERS_KEPT", "RECENT_CHANGES_KEPT", "REPLACED_WHOLE",
           "SEEN_IDS_KEPT"]

SEEN_IDS_KEPT = 64          # event ids remembered per key to drop duplicates
ORDERS_KEPT = 32            # recent order ids remembered (duplicate orders, refunds without amount)
RECENT_CHANGES_KEPT = 10    # last segment changes kept for the operator view
ALIASES_KEPT = 16           # anonymous ids linked to a customer, the most recent ones
#: container fields the engine never changes in place, only replaces as a whole (the undo
#: log of streams.state shares them instead of copying them; tests/test_streams_state.py
#: checks it over simulator traffic)
REPLACED_WHOLE = frozenset({"scores"})


@dataclass(slots=True, eq=True)
class CustomerState:
    key: str
    customer_id: str | None = None
    anonymous: bool = False
    aliases: list = field(default_factory=list)          # anonymous ids linked to this customer
    first_seen_at: float | None = None
    last_event_at: float | None = None
    local_time: float | None = None                      # the customer's own clock (never goes back)
    events: int = 0
    late_events: int = 0
    # purchases
    orders: int = 0
    cancelled_orders: int = 0
    refunds: int = 0
    gross_revenue: float = 0.0
    refunded_amount: float = 0.0
    first_order_at: float | None = None
    last_order_at: float | None = None
    last_gap_days: float | None = None
    ewma_gap_days: float | None = None
    discounted_orders: int = 0
    full_price_orders: int = 0
    coupon_orders: int = 0
    items_bought: int = 0
    recent_orders: dict = field(default_factory=dict)    # order_id -> [total, cancelled]
    # browsing and carts
    sessions: int = 0
    page_views: int = 0
    product_views: int = 0
    searches: int = 0
    carts_started: int = 0
    carts_abandoned: int = 0
    last_abandon_at: float | None = None
    abandoned_cart_value: float = 0.0                    # value of the cart abandoned since the last order
    checkouts_started: int = 0
    session: dict | None = None
    last_session_end: float | None = None                # when the last session closed
    # cart history for the abandonment model, kept where sessions close (session.close_session)
    last_cart_end: float | None = None                   # when the last session holding a cart closed
    abandon_episodes: int = 0                            # abandoned carts > 4 days after the previous cart
    items_seen: int = 0                                  # products viewed or added in closed sessions
    discounted_items_seen: int = 0                       # ... of which below their list price
    # feedback
    reviews: int = 0
    rating_sum: float = 0.0
    last_rating: int | None = None
    last_rating_at: float | None = None
    low_ratings: int = 0
    tickets: int = 0
    unresolved_tickets: int = 0
    delivery_issues: int = 0
    last_bad_experience_at: float | None = None
    # segments, timers, scores
    segments: dict = field(default_factory=dict)         # segment -> entered_at
    left_at: dict = field(default_factory=dict)          # segment -> exited_at
    due_at: float | None = None
    seg_due: dict = field(default_factory=dict)          # segment -> when its rule may flip
    definition_version: str | None = None                # catalogue the seg_due were computed with
    recent_changes: list = field(default_factory=list)   # [at, segment, change, event_id]
    scores: dict = field(default_factory=dict)           # replaced as a whole (REPLACED_WHOLE)
    model_data: dict = field(default_factory=dict)       # owned by the scorer
    # idempotence
    seen_ids: list = field(default_factory=list)
    positions: dict = field(default_factory=dict)        # source -> last applied offset
    duplicates: int = 0
    # a visitor folded into its customer: only ``positions`` and ``seen_ids`` are kept, so
    # that its events replayed after a crash are still recognised and skipped, and the
    # customer it was linked to, so that its later anonymous events (the same device, logged
    # out) are attributed to that customer (see Engine._retire, Engine.redirect_of)
    retired: bool = False
    linked_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerState:
        # the keys given as the field names' own string objects: a decoded key is a new
        # string, which the constructor matches against its ~60 parameter names by value,
        # one after another (19 us a state); the same object is matched at once (about 4)
        names = _FIELD_NAMES_OF
        return cls(**{names[k]: v for k, v in data.items() if k in names})

    def remember_id(self, event_id: str) -> bool:
        """Remember an event id; return False when it was already seen (a duplicate)."""
        seen = self.seen_ids
        if event_id in seen:
            return False
        seen.append(event_id)
        if len(seen) > SEEN_IDS_KEPT:
            del seen[0]
        return True


_FIELD_NAMES = tuple(f.name for f in fields(CustomerState))
_FIELD_NAMES_OF = {name: name for name in _FIELD_NAMES}
