"""Cart abandonment: P(a session holding a cart ends without an order).

Scored at every event of a session whose cart is not empty (anonymous visitors too); the
session is the engine's open session (``CustomerState.session``, ``models/session.py``).
Each such event is a prediction point; its inputs are kept in ``model_data["cart"]`` until
the session ends. The engine closes a session by an order, by another ``session_id`` or by
inactivity (its timer) and hands the closed session to ``on_session_end``: every pending
point of that session is labelled ``1`` when the engine counted it abandoned (it still held
a cart and no order came), ``0`` otherwise. The record is deleted when resolved, so each
label is taught exactly once. Pending points of a session that vanished without an end
(never expected; counted in ``orphaned``) are dropped, not guessed.

At most ``max_points`` points are kept per session: when full, every second one is dropped
and from then on only every ``stride``-th event is recorded (the stride doubles each time),
so a long session stays small and is still covered from start to end.

Per-session storage, ``model_data["cart"]``::

    {"v": encoding version, "s": [session id, started_at], "k": stride, "n": events seen,
     "r": product removals, "e": last event type, "d": device, "c": campaign seen,
     "l": logged in, "p": [[t, p served, [inputs...]], ...]}

Prior (cold start): the abandonment rate of the stage the session is in (cart only, or
checkout started), Beta-smoothed from ``prior_rates`` (literature: about 70% of carts are
abandoned, fewer once checkout has started) and updated with every label.

Inputs (encoding ``a2``): the open session, the customer's counts, and the cart history the
engine keeps where sessions close (``models/session.py``): abandonment *episodes* (abandoned
carts more than 4 days after the previous cart session: a serial abandoner walks away on
separate occasions, a shopper retrying the same purchase within days is one episode), whether
this cart opens a new one after an abandoned cart (``new_cart_4d_after_abandon``), episodes per
order (``(episodes incl. this cart's + 0.5) / (orders + 0.5)``), the share of products below list
price among those viewed or added in past sessions (``(discounted + 0.3) / (seen + 1)``), hours
since the previous session and whether it was abandoned within 72 h. ``a1`` (before the
history inputs) points are stale under ``a2`` and dropped, never learned.
"""

from __future__ import annotations

from typing import Any

from ..clock import HOUR, MINUTE
from ..session import new_abandon_episode
from .blended import BlendedClassifier
from .encoding import Encoder
from .linear import logit

__all__ = ["ABANDON_ENCODER", "AbandonModel"]

ABANDON_ENCODER = Encoder("a2", [
    ("cart_value", "log"),
    ("cart_items", "lin"),
    ("cart_shrink", "lin"),            # 1 - cart value / max cart value of the session
    ("session_events", "log"),
    ("session_minutes", "log"),
    ("session_page_views", "lin"),     # capped at 30
    ("session_product_views", "log"),
    ("session_searches", "log"),
    ("removals", "log"),
    ("checkout_started", "flag"),
    ("last_event_checkout", "flag"),
    ("last_event_cart", "flag"),
    ("discount_seen", "flag"),
    ("campaign", "flag"),              # the session came through a campaign (context.campaign)
    ("mobile", "flag"),                # context.device.type
    ("tablet", "flag"),
    ("logged_in", "flag"),             # the latest event carries a customer_id
    ("orders", "log"),
    ("days_since_last_order", "log"),
    ("carts_abandoned", "log"),
    ("past_abandon_rate", "lin"),
    ("carts_started", "log"),
    # the cart history (models/session.py): a serial abandoner walks away on separate
    # occasions, a shopper who retries the same purchase within days is one episode
    ("abandon_episodes", "log"),
    ("new_cart_4d_after_abandon", "flag"),
    ("abandon_episodes_per_order", "ln"),
    ("past_discounted_share", "lin"),
    ("hours_since_last_session", "log"),
    ("abandoned_last_session_72h", "flag"),
])

_CHECKOUT_TYPES = frozenset({"checkout_started", "checkout_step"})
_CART_TYPES = frozenset({"product_added", "product_removed"})


class AbandonModel(BlendedClassifier):
    def __init__(self, warmup_labels: int = 200, lr: float = 0.02, l2: float = 1e-4,
                 top_reasons: int = 3, max_points: int = 8,
                 prior_rates: tuple[float, float] = (0.75, 0.45), prior_strength: float = 20.0,
                 lr_decay: float = 0.0, lr_floor: float = 0.0) -> None:
        super().__init__("abandon-logreg", ABANDON_ENCODER, warmup_labels=warmup_labels, lr=lr,
                         l2=l2, top_reasons=top_reasons, lr_decay=lr_decay, lr_floor=lr_floor)
        self.max_points = max_points
        # [abandoned, sessions] pseudo-counts per stage: 0 = cart only, 1 = checkout started
        self.stage_counts = [[r * prior_strength, prior_strength] for r in prior_rates]
        self.sessions_labelled = 0
        self.orphaned = 0
        self._checkout_at = self.encoder.names.index("checkout_started")
        # the last result, so the engine's score() right after on_event() is not computed twice:
        # (the session's model data, its event count, (last event time, recency), result)
        self._memo: tuple | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_memo"] = None
        return state

    # -- scoring -------------------------------------------------------------------------
    @staticmethod
    def holds_cart(state: Any) -> bool:
        sess = getattr(state, "session", None)
        return bool(sess and sess.get("cart_items", 0) > 0)

    @staticmethod
    def values(state: Any, f: dict[str, Any], md: dict | None) -> dict[str, Any]:
        """The raw inputs from the open session, the customer and the session's own notes."""
        sess = state.session
        md = md or {}
        mx = sess.get("max_cart_value") or 0.0
        value = sess.get("cart_value", 0.0)
        last_type = md.get("e")
        device = md.get("d")
        episodes = state.abandon_episodes
        new_episode = new_abandon_episode(state)
        last_end = state.last_session_end
        gap = None if last_end is None else sess["started_at"] - last_end
        return {
            "cart_value": value,
            "cart_items": min(sess.get("cart_items", 0), 20),
            "cart_shrink": 1.0 - value / mx if mx > 0 else 0.0,
            "session_events": sess.get("events", 0),
            "session_minutes": (sess["last_at"] - sess["started_at"]) / MINUTE,
            "session_page_views": min(sess.get("page_views", 0), 30),
            "session_product_views": sess.get("product_views", 0),
            "session_searches": sess.get("searches", 0),
            "removals": md.get("r", 0),
            "checkout_started": sess.get("checkout", False),
            "last_event_checkout": last_type in _CHECKOUT_TYPES,
            "last_event_cart": last_type in _CART_TYPES,
            "discount_seen": sess.get("discount_seen", False),
            "campaign": md.get("c", False),
            "mobile": device == "mobile",
            "tablet": device == "tablet",
            "logged_in": md.get("l", not state.anonymous),
            "orders": f.get("orders", 0),
            "days_since_last_order": f.get("days_since_last_order"),
            "carts_abandoned": state.carts_abandoned,
            "past_abandon_rate": (state.carts_abandoned + 0.7) / (state.carts_started + 1.0),
            "carts_started": state.carts_started,
            "abandon_episodes": episodes,
            "new_cart_4d_after_abandon": new_episode,
            "abandon_episodes_per_order": (episodes + new_episode + 0.5) / (state.orders + 0.5),
            "past_discounted_share": (state.discounted_items_seen + 0.3) / (state.items_seen + 1.0),
            "hours_since_last_session": None if gap is None else max(gap, 0.0) / HOUR,
            "abandoned_last_session_72h": gap is not None and gap <= 72 * HOUR
                                          and state.last_abandon_at == state.last_session_end,
        }

    def prior(self, v: dict) -> float:
        a, n = self.stage_counts[1 if v["checkout_started"] else 0]
        return a / n

    def prior_reasons(self, v: dict) -> list[dict]:
        p = self.prior(v)
        overall = sum(c[0] for c in self.stage_counts) / sum(c[1] for c in self.stage_counts)
        return [{"feature": "checkout_started", "value": bool(v["checkout_started"]),
                 "contribution": round(logit(p) - logit(overall), 4)}]

    def score(self, state: Any, f: dict[str, Any],
              md: dict | None = None) -> tuple[float | None, list[dict], str, dict | None]:
        if not self.holds_cart(state):
            return None, [], "none", None
        memo = self._memo
        at = (state.session["last_at"], f.get("days_since_last_order"))
        if memo is not None and md is not None and memo[0] is md and memo[1] == md["n"] \
                and memo[2] == at:
            return memo[3]
        v = self.values(state, f, md)
        x = self.encoder.encode(v)
        p, reasons, method = self.predict(x, self.prior(v), lambda: self.prior_reasons(v))
        result = (p, reasons, method, x)
        if md is not None:
            self._memo = (md, md["n"], at, result)
        return result

    # -- delayed labels ------------------------------------------------------------------
    @staticmethod
    def _ident(sess: dict | None) -> list | None:
        return None if sess is None else [sess.get("id"), sess.get("started_at")]

    def on_session_end(self, model_data: dict, session: dict, now: float) -> int:
        """Label the pending points of the closed ``session``; return how many were taught."""
        md = model_data.get("cart")
        if md is None or md["s"] != self._ident(session):
            return 0
        del model_data["cart"]
        y = bool(session.get("abandoned"))
        checkout = md["v"] == self.encoder.version and any(
            pend[2][self._checkout_at] > 0 for pend in md["p"])
        counts = self.stage_counts[1 if checkout else 0]
        counts[0] += y
        counts[1] += 1
        self.sessions_labelled += 1
        end = session.get("ended_at", now)
        return sum(self.learn(pend, md["v"], y, end) for pend in md["p"])

    def _drop_orphan(self, model_data: dict, state: Any) -> dict | None:
        md = model_data.get("cart")
        if md is not None and md["s"] != self._ident(getattr(state, "session", None)):
            del model_data["cart"]
            self.orphaned += 1
            return None
        return md

    def on_event(self, model_data: dict, state: Any, f: dict[str, Any], event: dict, now: float) -> None:
        md = self._drop_orphan(model_data, state)
        if not self.holds_cart(state):
            return
        if md is None:
            md = model_data["cart"] = {"v": self.encoder.version, "s": self._ident(state.session),
                                       "k": 1, "n": 0, "r": 0, "e": None, "d": None, "c": False,
                                       "l": False, "p": []}
        kind = event.get("type")
        ctx = event.get("context") or {}
        md["n"] += 1
        md["r"] += kind == "product_removed"
        md["e"] = kind
        device = ctx.get("device")
        if isinstance(device, dict):                    # the contract: {"type": "mobile", ...}
            device = device.get("type")
        md["d"] = device or md["d"]
        md["c"] = md["c"] or bool(ctx.get("campaign"))
        md["l"] = event.get("customer_id") is not None
        p, _reasons, _method, x = self.score(state, f, md)     # memoised for the engine's score()
        if (md["n"] - 1) % md["k"]:
            return
        md["p"].append(self.record(now, p, x))
        if len(md["p"]) > self.max_points:
            md["p"] = md["p"][::2]
            md["k"] *= 2

    def on_time(self, model_data: dict, state: Any, now: float) -> None:
        self._drop_orphan(model_data, state)
        self._memo = None

    def next_due(self, model_data: dict, state: Any, session_timeout: float) -> float | None:
        """The open session's timeout (the engine fires it anyway; merged for safety)."""
        if "cart" not in model_data:
            return None
        sess = getattr(state, "session", None)
        return None if sess is None else sess["last_at"] + session_timeout

    def describe(self) -> dict:
        d = super().describe()
        d["sessions_labelled"] = self.sessions_labelled
        d["orphaned_sessions"] = self.orphaned
        d["prior_stage_rates"] = {"cart": self.stage_counts[0][0] / self.stage_counts[0][1],
                                  "checkout": self.stage_counts[1][0] / self.stage_counts[1][1]}
        return d
