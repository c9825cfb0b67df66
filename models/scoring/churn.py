"""Churn risk: P(no order within the horizon H), learned online from delayed labels.

The score is served at every event and timer. *Prediction points* (each becomes one training
example when its label arrives) form a regular per-customer grid in event time:
- at a new order, unless the last point is less than ``checkpoint_days`` old (a frequent
  buyer does not flood the learner with near-identical easy points);
- at checkpoints every ``checkpoint_days`` after the last point, while the customer has been
  quiet for at most ``max_quiet_days`` (the engine's due-time index wakes the customer:
  :meth:`ChurnModel.next_due`); the next order restarts the grid.
So every customer contributes about one point per ``checkpoint_days`` whether they buy or
not: the training sample looks like the cross-section of customers the model is asked about.

A prediction made at ``t`` is resolved exactly once: ``0`` by the first new order at
``t' >= t`` with ``t' - t <= H``, ``1`` as soon as event time passes ``t + H`` without one.
It is removed from ``model_data`` when resolved, so a repeated due time or a re-sent order
(the profile does not count an ``order_id`` twice, and the model only reacts to an increase
of the order count) cannot resolve it again. The learner is taught the inputs stored with the
prediction, never the current ones: the production mirror of
``river.evaluate.progressive_val_score(..., delay=H)``.

Per-customer storage, ``model_data["churn"]``::

    {"v": encoding version, "o": orders seen, "cp": next checkpoint (epoch s) or None,
     "lp": time of the last point, "p": [[t, p served, [inputs...]], ...]}
    # at most H / checkpoint_days + 2 pending entries

Prior (cold start): the BG/NBD probability of no purchase in ``(T, T + H]`` from the
population parameters, ``(1 - P_alive) + P_alive * ((alpha + T) / (alpha + T + H)) ** (r + x)``.
Its logit is also an input of the learned model.
"""

from __future__ import annotations

from typing import Any

from ..clock import DAY
from .blended import BlendedClassifier
from .encoding import Encoder
from .linear import logit
from .population import Population
from .value import bgnbd_churn, bgnbd_inputs, expected_gap_days

__all__ = ["CHURN_ENCODER", "ChurnModel", "churn_values"]

CHURN_ENCODER = Encoder("c1", [
    ("days_since_last_order", "log"),
    ("orders", "log"),
    ("tenure_days", "log"),
    ("overdue_ratio", "log"),         # days since last order / expected gap
    ("aov", "log"),
    ("purchase_frequency", "log"),
    ("gap_trend", "log"),             # recent gap / mean gap
    ("bgnbd_no_order", "logit"),      # the prior
    ("p_alive", "lin"),
    ("days_since_last_event", "log"),
    ("sessions", "log"),
    ("refund_share", "lin"),
    ("discounted_share", "lin"),
    ("carts_abandoned", "log"),
    ("low_ratings", "log"),
    ("unresolved_tickets", "log"),
    ("delivery_issues", "log"),
    ("recent_bad_experience", "flag"),
])


_DERIVED = frozenset({"overdue_ratio", "refund_share", "bgnbd_no_order", "p_alive",
                      "recent_bad_experience"})
_FROM_FEATURES = tuple(n for n in CHURN_ENCODER.names if n not in _DERIVED)


def churn_values(f: dict[str, Any], pop: Population, horizon_days: float) -> dict[str, Any] | None:
    """The raw inputs of the churn model from the engine features (None: no order yet)."""
    bg = bgnbd_churn(f, pop, horizon_days)
    if bg is None:
        return None
    gross = f.get("gross_revenue") or 0.0
    bad = f.get("days_since_last_bad_experience")
    v = {name: f.get(name) for name in _FROM_FEATURES}
    v["overdue_ratio"] = (f["days_since_last_order"] or 0.0) / max(expected_gap_days(f, pop.gap_days), 1.0)
    v["refund_share"] = min(max((f.get("refunded_amount") or 0.0) / gross, 0.0), 1.0) if gross > 0 else 0.0
    v["bgnbd_no_order"], v["p_alive"] = bg
    v["recent_bad_experience"] = bad is not None and bad <= horizon_days
    if v.get("gap_trend") is None:
        v["gap_trend"] = 1.0
    return v


class ChurnModel(BlendedClassifier):
    def __init__(self, horizon_days: float = 90.0, checkpoint_days: float = 30.0,
                 max_quiet_days: float = 730.0, warmup_labels: int = 200, lr: float = 0.0005,
                 l2: float = 1e-4, top_reasons: int = 3, lr_decay: float = 0.0,
                 lr_floor: float = 0.0, prior_offset: bool = False) -> None:
        super().__init__("churn-logreg", CHURN_ENCODER, warmup_labels=warmup_labels, lr=lr, l2=l2,
                         top_reasons=top_reasons, lr_decay=lr_decay, lr_floor=lr_floor,
                         offset_feature="bgnbd_no_order" if prior_offset else None)
        self.horizon_days = horizon_days
        self.horizon = horizon_days * DAY
        self.checkpoint = checkpoint_days * DAY
        self.max_quiet = max_quiet_days * DAY
        self.max_pending = int(horizon_days // checkpoint_days) + 2

    # -- scoring -------------------------------------------------------------------------
    def prior_reasons(self, f: dict[str, Any], v: dict[str, Any], pop: Population) -> list[dict]:
        """The reason of the BG/NBD prior ``v["bgnbd_no_order"]``, decomposed in log-odds.

        ``logit P = logit q0 + [logit q - logit q0] + [logit P - logit q]`` where ``q0`` is the
        population's P(no order in H) for a new customer, ``q`` the same for this customer
        if surely alive (their purchase rate: orders over tenure) and ``P`` adds the chance
        they already left (recency).
        """
        p = v["bgnbd_no_order"]
        pa = v["p_alive"]
        x, _t_x, T = bgnbd_inputs(f)
        bg = pop.bgnbd
        q = ((bg.alpha + T) / (bg.alpha + T + self.horizon_days)) ** (bg.r + x)
        q0 = (bg.alpha / (bg.alpha + self.horizon_days)) ** bg.r
        reasons = [
            {"feature": "days_since_last_order", "value": round(f["days_since_last_order"], 2),
             "contribution": round(logit(p) - logit(q), 4), "p_alive": round(pa, 4)},
            {"feature": "orders", "value": f["orders"],
             "contribution": round(logit(q) - logit(q0), 4), "tenure_days": round(T, 2)},
        ]
        reasons.sort(key=lambda r: -abs(r["contribution"]))
        return reasons

    def score(self, f: dict[str, Any], pop: Population) -> tuple[float | None, list[dict], str, dict | None]:
        v = churn_values(f, pop, self.horizon_days)
        if v is None:
            return None, [], "none", None
        x = self.encoder.encode(v)
        p, reasons, method = self.predict(x, v["bgnbd_no_order"],
                                          lambda: self.prior_reasons(f, v, pop))
        return p, reasons, method, x

    # -- delayed labels ------------------------------------------------------------------
    def _md(self, model_data: dict) -> dict:
        md = model_data.get("churn")
        if md is None or md.get("v") != self.encoder.version:
            old = md
            md = model_data["churn"] = {"v": self.encoder.version, "o": 0, "cp": None, "p": []}
            if old is not None:            # keep the order count; drop inputs of another encoding
                md["o"] = old.get("o", 0)
                md["cp"] = old.get("cp")
                self.stale_labels += len(old.get("p", ()))
        return md

    def settle(self, model_data: dict, now: float, order_at: float | None = None) -> int:
        """Resolve the pending predictions that event time (or a new order) decides."""
        md = model_data.get("churn")
        if not md or not md["p"]:
            return 0
        keep, done = [], 0
        for pend in md["p"]:
            t = pend[0]
            if order_at is not None and t <= order_at and order_at - t <= self.horizon:
                y, at = False, order_at
            elif t + self.horizon <= now or (order_at is not None and order_at - t > self.horizon):
                y, at = True, t + self.horizon
            else:
                keep.append(pend)
                continue
            self.learn(pend, md["v"], y, at)
            done += 1
        md["p"] = keep
        return done

    def _predict_point(self, md: dict, f: dict[str, Any], pop: Population, now: float) -> None:
        p, _reasons, _method, x = self.score(f, pop)
        if p is None:
            return
        md["p"].append(self.record(now, p, x))
        md["lp"] = now
        if len(md["p"]) > self.max_pending:     # cannot happen with a working due-time index
            self.stale_labels += 1
            del md["p"][0]

    def on_event(self, model_data: dict, f: dict[str, Any], event: dict, pop: Population,
                 now: float, event_time: float) -> None:
        md = self._md(model_data)
        orders = f.get("orders") or 0
        if event.get("type") == "order_completed" and orders > md["o"]:
            md["o"] = orders
            self.settle(model_data, now, order_at=event_time)
            lp = md.get("lp")
            if lp is None or now - lp >= self.checkpoint:
                self._predict_point(md, f, pop, now)
                md["cp"] = now + self.checkpoint
            elif md["cp"] is None:
                md["cp"] = lp + self.checkpoint
        else:
            md["o"] = max(md["o"], orders)
            self.on_time(model_data, f, pop, now)

    def on_time(self, model_data: dict, f: dict[str, Any], pop: Population, now: float) -> None:
        md = self._md(model_data)
        self.settle(model_data, now)
        cp = md["cp"]
        if cp is None or now < cp:
            return
        rec = f.get("days_since_last_order")
        if rec is not None and rec * DAY <= self.max_quiet:
            self._predict_point(md, f, pop, now)
        last = now - (rec or 0.0) * DAY
        while cp <= now:
            cp += self.checkpoint
        md["cp"] = cp if cp - last <= self.max_quiet else None

    def next_due(self, model_data: dict) -> float | None:
        md = model_data.get("churn")
        if not md:
            return None
        dues = [p[0] + self.horizon for p in md["p"]]
        if md["cp"] is not None:
            dues.append(md["cp"])
        return min(dues) if dues else None
