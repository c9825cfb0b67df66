"""Sessions: per visitor, closed by inactivity (event time) or by an order.

A session is a small dict kept in ``CustomerState.session`` while it is open. Cart contents
and value follow ``product_added`` / ``product_removed``. A session that closes by
inactivity while holding a cart is an *abandoned cart*.

Cart history, kept in event time when a session closes (inputs of the abandonment model):
``last_cart_end`` (when the last session that held a cart closed), ``abandon_episodes``
(abandoned carts whose session started more than ``EPISODE_GAP`` = 4 days after the previous
cart session closed, or with no cart session before: walking away on separate occasions,
where a retry of the same purchase within days is one episode), and ``items_seen`` /
``discounted_items_seen`` (products viewed or added, and those below their list price).

>>> from models.state import CustomerState
>>> s = CustomerState(key="v1", anonymous=True)
>>> _ = open_or_continue(s, {"type": "product_added", "session_id": "s1"}, 0.0, 1800.0)
>>> apply_cart(s.session, {"type": "product_added", "product_id": "p", "quantity": 2, "price": 5.0})
>>> s.session["cart_value"], s.session["cart_items"]
(10.0, 2)
>>> session_due(s, 1800.0)
1800.0
>>> close_session(s, 1800.0, ordered=False)["abandoned"]
True
>>> s.carts_abandoned, s.session
(1, None)
"""

from __future__ import annotations

from typing import Any

from .clock import DAY
from .state import CustomerState

__all__ = ["EPISODE_GAP", "MAX_CART_LINES", "apply_cart", "close_session", "last_cart_abandoned",
           "new_abandon_episode", "open_or_continue", "see_item", "session_due"]

MAX_CART_LINES = 200   # distinct products kept per cart; more are pooled under "_other"
EPISODE_GAP = 4 * DAY  # an abandoned cart this long after the previous cart is a new episode


def new_session(session_id: str | None, t: float) -> dict[str, Any]:
    return {
        "id": session_id, "started_at": t, "last_at": t, "events": 0,
        "page_views": 0, "product_views": 0, "searches": 0,
        "cart": {}, "cart_id": None, "cart_value": 0.0, "cart_items": 0, "max_cart_value": 0.0,
        "had_cart": False, "checkout": False, "discount_seen": False,
        "items_seen": 0, "discounted_seen": 0,
    }


def session_due(state: CustomerState, timeout: float) -> float | None:
    """When the open session times out, or None."""
    sess = state.session
    return None if sess is None else sess["last_at"] + timeout


def close_session(state: CustomerState, at: float, ordered: bool) -> dict[str, Any]:
    """Close the open session; return it with ``ended_at``, ``ordered`` and ``abandoned``."""
    sess = state.session
    assert sess is not None
    state.session = None
    state.last_session_end = at
    abandoned = (not ordered) and sess["cart_items"] > 0
    if abandoned:
        state.carts_abandoned += 1
        state.last_abandon_at = at
        state.abandoned_cart_value = sess["cart_value"]
    if sess["had_cart"]:
        last = state.last_cart_end
        if abandoned and (last is None or sess["started_at"] - last > EPISODE_GAP):
            state.abandon_episodes += 1
        state.last_cart_end = at
    state.items_seen += sess.get("items_seen", 0)          # absent in sessions stored before
    state.discounted_items_seen += sess.get("discounted_seen", 0)
    sess["ended_at"] = at
    sess["ordered"] = ordered
    sess["abandoned"] = abandoned
    return sess


def last_cart_abandoned(state: CustomerState) -> bool:
    """Whether the last closed session that held a cart was abandoned (it closed when the
    last abandonment was counted)."""
    return state.last_cart_end is not None and state.last_abandon_at == state.last_cart_end


def new_abandon_episode(state: CustomerState) -> bool:
    """Whether the open session, if it ends abandoned, starts a new abandonment episode after
    an abandoned one: the last cart session was abandoned and closed more than ``EPISODE_GAP``
    before this session started."""
    sess = state.session
    return (sess is not None and last_cart_abandoned(state)
            and sess["started_at"] - state.last_cart_end > EPISODE_GAP)


def see_item(sess: dict[str, Any], price: Any, list_price: Any) -> None:
    """A product viewed or added in the session: counted, and noted when below its list price."""
    sess["items_seen"] = sess.get("items_seen", 0) + 1
    if list_price is not None and price is not None and float(price) < float(list_price):
        sess["discount_seen"] = True
        sess["discounted_seen"] = sess.get("discounted_seen", 0) + 1


def open_or_continue(state: CustomerState, event: dict[str, Any], t: float,
                     timeout: float) -> dict[str, Any] | None:
    """Make sure an open session holds this event; return a session closed on the way.

    A different ``session_id`` from the shop closes the open session first (as of its
    last event). Inactivity is handled by the engine's timers before this is called; a
    gap still found here (a late event beyond the timers) also closes the session.
    """
    closed = None
    sess = state.session
    sid = event.get("session_id")
    if sess is not None:
        other_id = sid is not None and sess["id"] is not None and sid != sess["id"]
        if other_id or t - sess["last_at"] > timeout:
            closed = close_session(state, min(sess["last_at"] + timeout, max(t, sess["last_at"])),
                                   ordered=False)
            sess = None
    if sess is None:
        sess = state.session = new_session(sid, t)
        state.sessions += 1
    if t > sess["last_at"]:
        sess["last_at"] = t
    sess["events"] += 1
    return closed


def apply_cart(sess: dict[str, Any], event: dict[str, Any]) -> None:
    """Apply ``product_added`` / ``product_removed`` to the session's cart.

    Items and value are kept incrementally (constant work per event); a cart holds at most
    ``MAX_CART_LINES`` distinct products, further ones are pooled under ``"_other"``. The
    shop's ``cart_total_after``, when present, is the cart value.
    """
    cart = sess["cart"]
    pid = str(event.get("product_id"))
    qty = int(event.get("quantity", 1))
    price = float(event.get("price", 0.0))
    list_price = event.get("list_price")
    items = sess["cart_items"]
    value = sess.get("cart_raw_value", 0.0)
    if event["type"] == "product_added":
        line = cart.get(pid)
        if line is None and len(cart) >= MAX_CART_LINES:
            pid = "_other"
            line = cart.get(pid)
        if line is None:
            cart[pid] = [qty, price]
        else:
            value -= line[0] * line[1]
            line[0] += qty
            line[1] = price
            value += line[0] * price
            value -= qty * price  # added below, once
        items += qty
        value += qty * price
        see_item(sess, price, list_price)
        sess["had_cart"] = True
    else:
        line = cart.get(pid)
        if line is not None:
            gone = min(qty, line[0])
            line[0] -= gone
            items -= gone
            value -= gone * line[1]
            if line[0] <= 0:
                del cart[pid]
    if event.get("cart_id") is not None:
        sess["cart_id"] = event["cart_id"]
    if not cart:
        items, value = 0, 0.0
    sess["cart_items"] = items
    sess["cart_raw_value"] = value
    reported = event.get("cart_total_after")
    sess["cart_value"] = round(float(reported) if reported is not None else value, 2)
    if sess["cart_value"] > sess["max_cart_value"]:
        sess["max_cart_value"] = sess["cart_value"]
