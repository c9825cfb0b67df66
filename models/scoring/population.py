"""The customer population: BG/NBD and Gamma-Gamma parameters, refit from a bounded sample.

The hub never scans the customer table. Instead it keeps a *bottom-k sample* of customers
with at least one order: each customer key is hashed (sha1) to a number in [0, 1) and the
``size`` keys with the smallest hashes are kept with their purchase summary
(first order, last order, orders, AOV). This is a uniform, deterministic sample that
survives restarts and does not depend on arrival order. Every ``refit_every_days`` of event
time (and when there are at least ``min_customers``) the population parameters are refit
from the sample's summaries ``(x = orders - 1, t_x, T, orders, aov)`` at that time, warm-started
from the previous fit. :meth:`Population.refit` can also be called with summaries computed
elsewhere (a batch job over the table).

BG/NBD waits for ``min_history_days`` of orders (event time since the earliest first order the
population has seen): fitted on a few days, when no customer has had time to come back, it
predicts almost no future purchases for anyone (docs/MODELS.md, "Population"), and the prior
(CDNOW's parameters) serves until then. Gamma-Gamma and the median gap are refit from the first
refit on: they describe order values and gaps already seen.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from statistics import median

from ..clock import DAY
from .btyd import (DEFAULT_BGNBD, DEFAULT_GAMMA_GAMMA, BGNBDParams, GammaGammaParams,
                   expected_purchases_one, fit_bgnbd, fit_gamma_gamma)

__all__ = ["Population", "key_hash"]

DEFAULT_GAP_DAYS = 60.0     # prior gap between orders before any customer has two


def key_hash(key: str) -> float:
    """A stable number in [0, 1) for a key.

    >>> 0 <= key_hash("c1") < 1 and key_hash("c1") == key_hash("c1")
    True
    """
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0 ** 64


class Population:
    """Population-level parameters and the sample they are refit from."""

    def __init__(self, size: int = 2000, refit_every_days: float = 7.0,
                 min_customers: int = 50, min_history_days: float = 14.0) -> None:
        self.size = size
        self.refit_every = refit_every_days * DAY
        self.min_customers = min_customers
        self.min_history = min_history_days * DAY
        self.since: float | None = None         # the earliest first order observed
        self.bgnbd_fits = 0
        self.bgnbd: BGNBDParams = DEFAULT_BGNBD
        self.gamma_gamma: GammaGammaParams = DEFAULT_GAMMA_GAMMA
        self.gap_days = DEFAULT_GAP_DAYS
        self.refits = 0
        self.refit_at: float | None = None
        self.fitted_on = 0
        self._rows: dict[str, tuple[float, float, int, float]] = {}
        self._heap: list[tuple[float, str]] = []      # (-hash, key): the largest hash on top
        self._new_purchases: dict[tuple, float] = {}  # (params, horizon) -> E[purchases], one entry

    def __setstate__(self, state: dict) -> None:
        """A population pickled before BG/NBD waited for ``min_history_days`` fits as it
        did: no minimum, and its refits counted as fits."""
        self.__dict__.update(state)
        self.__dict__.setdefault("min_history", 0.0)
        self.__dict__.setdefault("since", None)
        self.__dict__.setdefault("bgnbd_fits", self.refits)

    # -- sample -----------------------------------------------------------------------
    def observe(self, key: str, first_order_at: float | None, last_order_at: float | None,
                orders: int, aov: float) -> None:
        """Record a customer's purchase summary if the key belongs to the sample."""
        if not orders or first_order_at is None or last_order_at is None:
            return
        since = self.since
        if since is None or first_order_at < since:
            self.since = first_order_at
        row = (first_order_at, last_order_at, int(orders), float(aov))
        if key in self._rows:
            self._rows[key] = row
            return
        h = key_hash(key)
        if len(self._rows) < self.size:
            heapq.heappush(self._heap, (-h, key))
            self._rows[key] = row
        elif h < -self._heap[0][0]:
            _, evicted = heapq.heapreplace(self._heap, (-h, key))
            del self._rows[evicted]
            self._rows[key] = row

    def __len__(self) -> int:
        return len(self._rows)

    def summaries(self, now: float) -> list[tuple[float, float, float, int, float]]:
        """Rows ``(x, t_x, T, orders, aov)`` in days at ``now``."""
        out = []
        for first, last, orders, aov in self._rows.values():
            T = max(now - first, last - first) / DAY
            out.append((orders - 1, (last - first) / DAY, T, orders, aov))
        return out

    # -- refit ------------------------------------------------------------------------
    def due(self, now: float) -> bool:
        if len(self._rows) < self.min_customers:
            return False
        return self.refit_at is None or now >= self.refit_at + self.refit_every

    def maybe_refit(self, now: float) -> bool:
        if not self.due(now):
            return False
        self.refit(self.summaries(now), now)
        return True

    def history_days(self, now: float) -> float:
        """Days of orders the population has seen at ``now`` (0 before the first)."""
        since = self.since
        return 0.0 if since is None else max(now - since, 0.0) / DAY

    def refit(self, rows: list[tuple], now: float | None = None) -> None:
        """Refit from rows ``(x, t_x, T, orders, aov)``; keep the old parameters on failure.

        BG/NBD only once the population has seen ``min_history_days`` of orders at ``now``
        (always when ``now`` is None: rows from a batch job over the table)."""
        rows = [r for r in rows if r[2] > 0]
        if len(rows) < 2:
            return
        if now is None or self.history_days(now) >= self.min_history / DAY:
            try:
                bg = fit_bgnbd([r[:3] for r in rows], init=self.bgnbd, penalizer=1e-4)
                if all(math.isfinite(v) and v > 0 for v in (bg.r, bg.alpha, bg.a, bg.b)):
                    self.bgnbd = bg
                    self.bgnbd_fits += 1
            except (ValueError, FloatingPointError):
                pass
        spend = [(r[3], r[4]) for r in rows if r[3] > 0 and r[4] > 0]
        if len(spend) >= 2:
            try:
                gg = fit_gamma_gamma([s[0] for s in spend], [s[1] for s in spend],
                                     init=self.gamma_gamma, penalizer=1e-4)
                if gg.q > 1.0 and all(math.isfinite(v) for v in (gg.p, gg.q, gg.v)):
                    self.gamma_gamma = gg
            except (ValueError, FloatingPointError):
                pass
        gaps = [r[1] / r[0] for r in rows if r[0] >= 1 and r[1] > 0]
        if gaps:
            self.gap_days = float(median(gaps))
        self.refits += 1
        self.fitted_on = len(rows)
        self.refit_at = now

    def new_customer_purchases(self, horizon_days: float) -> float:
        """Expected purchases of a customer just acquired, over the horizon (cached per fit)."""
        cache = self._new_purchases
        key = (self.bgnbd, horizon_days)
        if key not in cache:
            cache.clear()
            cache[key] = expected_purchases_one(self.bgnbd, 0.0, 0.0, 0.0, horizon_days)
        return cache[key]

    def describe(self) -> dict:
        return {"bgnbd": self.bgnbd.to_dict(),
                "bgnbd_source": "fit" if self.bgnbd_fits else "prior (CDNOW)",
                "gamma_gamma": self.gamma_gamma.to_dict(),
                "median_gap_days": self.gap_days, "refits": self.refits,
                "fitted_on": self.fitted_on, "sample": len(self._rows), "refit_at": self.refit_at}
