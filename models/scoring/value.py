"""Customer value: next order date and predictive CLV, from the features of one customer.

Next order: the customer's own gap between orders (the recent, EWMA gap of the profile,
else the mean gap) shrunk towards the population's median gap with ``prior_gaps``
pseudo-gaps: ``gap = (n * own + k * population) / (n + k)`` with ``n = orders - 1``. A
one-order customer gets the population gap. ``next_order_at = last order + gap``.

Predictive CLV over ``horizon_days``: BG/NBD expected purchases in the horizon x the
Gamma-Gamma expected order value (population parameters from :class:`Population`).
The brief's simple formula, ``AOV x purchase frequency x horizon`` (frequency = orders per
year over the tenure floored at the engine's ``frequency_floor_days``), is computed beside
it and can be blended in (see :func:`clv_of`).
"""

from __future__ import annotations

import math
from typing import Any

from ..clock import DAY
from .btyd import expected_purchases_one, expected_spend_one, p_alive_one, prob_no_purchase_one
from .population import Population

__all__ = ["bgnbd_inputs", "clv_of", "expected_gap_days", "next_order_of"]


def bgnbd_inputs(f: dict[str, Any]) -> tuple[int, float, float] | None:
    """``(x, t_x, T)`` in days from the engine features, or None before the first order."""
    orders = f.get("orders") or 0
    T = f.get("tenure_days")
    rec = f.get("days_since_last_order")
    if orders < 1 or T is None or rec is None:
        return None
    T = max(float(T), 0.0)
    t_x = min(max(T - float(rec), 0.0), T)
    return orders - 1, t_x, T


def expected_gap_days(f: dict[str, Any], population_gap: float, prior_gaps: float = 1.0) -> float:
    """The customer's expected gap between orders, shrunk to the population gap.

    >>> expected_gap_days({"orders": 1}, 60.0)
    60.0
    >>> expected_gap_days({"orders": 5, "recent_gap_days": 10.0}, 60.0)
    20.0
    """
    n = max((f.get("orders") or 0) - 1, 0)
    own = f.get("recent_gap_days")
    if own is None:
        own = f.get("mean_days_between_orders")
    if n == 0 or own is None:
        return float(population_gap)
    return (n * float(own) + prior_gaps * population_gap) / (n + prior_gaps)


def next_order_of(f: dict[str, Any], now: float, pop: Population,
                  prior_gaps: float = 1.0) -> tuple[float | None, list[dict]]:
    """Expected next order time (epoch seconds) and its reason."""
    rec = f.get("days_since_last_order")
    if not f.get("orders") or rec is None:
        return None, []
    gap = expected_gap_days(f, pop.gap_days, prior_gaps)
    last = now - float(rec) * DAY
    n = max(f["orders"] - 1, 0)
    own = f.get("recent_gap_days") or f.get("mean_days_between_orders")
    reasons = [{"feature": "expected_gap_days", "value": round(gap, 2),
                "contribution": round(gap - pop.gap_days, 2)},
               {"feature": "own_gap_days", "value": None if own is None else round(own, 2),
                "contribution": None, "weight": round(n / (n + prior_gaps), 3)},
               {"feature": "population_gap_days", "value": round(pop.gap_days, 2),
                "contribution": None, "weight": round(prior_gaps / (n + prior_gaps), 3)}]
    return last + gap * DAY, reasons


def clv_of(f: dict[str, Any], pop: Population, horizon_days: float,
           simple_blend_k: float = 0.0) -> tuple[float, dict, list[dict]]:
    """Predictive CLV over ``horizon_days`` with its parts and reason.

    ``clv = w * btyd + (1 - w) * simple`` with ``w = 1`` when ``simple_blend_k == 0``,
    else ``w = k / (k + n)`` weights the simple formula by ``n / (n + k)``, ``n`` = repeat
    orders (the simple formula only means something once a rhythm exists).
    """
    inp = bgnbd_inputs(f)
    aov = float(f.get("aov") or 0.0)
    freq = float(f.get("purchase_frequency") or 0.0)
    simple = aov * freq * horizon_days / 365.0
    if inp is None:
        return 0.0, {"btyd": 0.0, "simple": 0.0, "expected_orders": 0.0,
                     "expected_order_value": None, "p_alive": None}, []
    x, t_x, T = inp
    e_orders = expected_purchases_one(pop.bgnbd, x, t_x, T, horizon_days)
    e_value = expected_spend_one(pop.gamma_gamma, f["orders"], max(aov, 0.0))
    btyd = max(e_orders * e_value, 0.0)
    if simple_blend_k > 0:
        w_simple = x / (x + simple_blend_k)
        clv = (1 - w_simple) * btyd + w_simple * simple
    else:
        clv = btyd
    pa = p_alive_one(pop.bgnbd, x, t_x, T)
    # multiplicative reason: log(clv / population clv) = log(E/E0) + log(m/m0)
    e0 = pop.new_customer_purchases(horizon_days)
    m0 = pop.gamma_gamma.population_mean
    reasons = []
    if e0 > 0 and e_orders > 0:
        reasons.append({"feature": "expected_orders", "value": round(e_orders, 3),
                        "contribution": round(math.log(e_orders / e0), 3)})
    if m0 and m0 > 0 and e_value > 0:
        reasons.append({"feature": "expected_order_value", "value": round(e_value, 2),
                        "contribution": round(math.log(e_value / m0), 3)})
    reasons.append({"feature": "p_alive", "value": round(pa, 3), "contribution": None})
    reasons.sort(key=lambda r: -abs(r["contribution"] or 0.0))
    parts = {"btyd": btyd, "simple": simple, "expected_orders": e_orders,
             "expected_order_value": e_value, "p_alive": pa}
    return clv, parts, reasons


def bgnbd_churn(f: dict[str, Any], pop: Population, horizon_days: float) -> tuple[float, float] | None:
    """BG/NBD ``(P(no order in the horizon), P(alive))`` or None before the first order."""
    inp = bgnbd_inputs(f)
    if inp is None:
        return None
    x, t_x, T = inp
    return (prob_no_purchase_one(pop.bgnbd, x, t_x, T, horizon_days),
            p_alive_one(pop.bgnbd, x, t_x, T))
