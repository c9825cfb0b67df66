"""Seeded shopper simulator with ground truth.

Generates the site events of PRODUCT.md section 2 for a population of known customer types
plus anonymous visitors, together with the truth the engine is supposed to recover: each
customer's type and churn time, and each session's true abandonment probability.

Reproducible: one ``random.Random(seed)`` drives everything, in the deterministic order in
which the event streams are merged, so the same :class:`SimConfig` gives byte-identical
events (``write_jsonl``) in any process. :func:`simulate` is ``list(iter_events(...))``
plus the truth, so the streaming and the in-memory forms give the same events.

Population (default ``SimConfig.mix``; shares of ``n_customers``, exact counts):

==========================  =====  ==========================================================
type                        share  behaviour
==========================  =====  ==========================================================
one_timer                   0.58   one order (an abandoned cart is retried until it orders),
                                   then never returns; ``churned_at`` = that order
loyal                       0.08   a shopping trip every 30-60 days, abandons ~25% of carts
vip                         0.02   a trip every 7-21 days, pricier products, bigger baskets
discount_hunter             0.07   trip every 40-100 days, comes through sale campaigns, buys
                                   sale items, coupon on ~70% of orders
full_price                  0.06   trip every 40-100 days, never a coupon or a sale item
slowly_churning             0.06   gap = own base (20-40 days) x 1.3-1.8 more per order
                                   (+-10%); stops after 3-6 orders (``churned_at`` = last)
serial_cart_abandoner       0.07   a cart every 15-40 days plus casual carts, abandons ~95%
unhappy_after_bad_delivery  0.06   1-3 good orders, then an order with a high/critical
                                   unresolved ``delivery_issue`` and ``support_ticket``, a
                                   1-2 star review (half also get a refund), then never
                                   orders again (``churned_at`` = that last order,
                                   ``bad_experience_at`` = the delivery issue)
==========================  =====  ==========================================================

Loyal, vip, discount_hunter, full_price and serial_cart_abandoner never churn
(``churned_at`` None); slowly_churning / unhappy customers whose last order would fall after
the end of the period have ``churned_at`` None as well (not yet churned).

Customers arrive over the first ``acquisition`` share of the period (0.75), so the average
customer is observed for ~7.5 months of a one-year run. Figures for 10,000 customers x 365
days (seed 7): 578k events (~58 per customer), 2.15 orders per customer (2.27 per customer
with an order), repeat-purchase rate 36%, 70k sessions of which 47k hold a cart, 54% of carts
abandoned; ``python -m models.simulator --customers 10000 --days 365 --out x.jsonl`` prints them.

Sessions: a landing page, a random walk over category / product / search pages (product pages
also emit ``product_viewed``), for cart sessions 1-6 ``product_added`` (70% after viewing the
product, sometimes a ``product_removed``) and a cart page, then either the checkout
(``page_view`` checkout, ``checkout_started`` step 1, ``checkout_step`` step 2,
``order_completed``) or the visitor leaves (30% of the abandoners after ``checkout_started``).
Events are 1 s - 10 min apart (median ~20 s); sessions start at daytime/evening hours (UTC)
and at least 31 minutes after the previous one of the same shopper.

Abandonment truth: every session that holds a cart gets
``p_abandon = sigmoid(z)`` with, from features observable in the events *before* the decision::

    z = 0.8 + type_offset + 0.55*ln(max(cart_value_gbp, 1)/40) - 0.10*(cart_units-1)
        - 0.07*min(page_views, 25) - 0.55*ln(1+past_orders) + 0.35*ln(1+past_abandoned_carts)
        - 0.6*discount_seen + {desktop: 0, tablet: 0.2, mobile: 0.45}[device]
        + 0.5*(not logged in) + 0.9*(casual cart, no shopping intent) + N(0, 0.4)

(``page_views``: ``page_view`` events of the session so far; ``discount_seen``: a viewed or
added product below its list price, or a sale campaign). The outcome is drawn from it and the
truth records ``p_abandon`` (clamped to [0.001, 0.999]). Type offsets: ``TYPES[...]
['offset']``.

Identity: a known customer's web session starts logged out with probability
``anonymous_share`` (anonymous id per device, kept across sessions); such a session logs in
before the checkout (always) or on an account page (sometimes): that ``page_view``
(``page_type`` account) carries both ``anonymous_id`` and ``customer_id``, and the rest of the
session carries both. Anonymous visitors (``anonymous_visitors``) never log in; when their cart
converts they check out as guests (``order_completed`` with ``anonymous_id`` only).

After an order (events keep the order's ``session_id``, ``refund``/``cancel`` lines are
``{product_id, quantity, price, amount}``):
``order_cancelled`` (1.5%, minutes later, full amount), ``order_refunded`` (3-6%, days later,
some lines), ``delivery_issue`` (3%, mostly low/resolved), ``support_ticket``,
``review_submitted`` (15%, 5-15 days later). Guest orders get none of these.

Money is kept in integer cents and written as floats with 2 decimals; the store currency is
GBP with VAT-inclusive prices (``tax`` 0); ``usd_share`` of customers (default 0: the engine
needs ``EngineConfig.currency_rates`` for them) pay in USD at ``usd_rate`` with a 7% sales tax.
``order_completed``: ``subtotal = sum(quantity*price)``, ``discount = sum(line discount)`` (the
coupon, allocated per line), ``total = subtotal - discount + shipping + tax``; shipping 3.99 below
50.00. ``cart_item_count`` is the number of units in the cart.

Delivery order: by ``occurred_at`` except for the perturbations. A *late* event (each event
that is not the last of its session, with probability ``late_rate`` x n/(n-1)) is sent after
the next event of its session plus 1-120 s, so it arrives behind at least one later event of
the same session (``sent_at`` = that later time). A *duplicate* (``duplicate_rate``) is an
exact copy (same ``event_id`` and bytes) delivered 0.5-60 s after the original. Sessions start
at least 12 h before the end of the period and after-order events past the end are dropped, so
no event occurs after it.

``context`` is ``{"device": {"type": "mobile"|"desktop"|"tablet"}, "locale": ...,
"campaign": {"source", "medium", "name"}}`` (campaign only when the session came from one), as
the contract (``schemas/envelope.v1.schema.json``) defines it; the events of one session share
their ``context`` dict, so copy it before mutating an event's context in place.
"""

from __future__ import annotations

import argparse
import copy
import heapq
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from .clock import format_time, parse_time

__all__ = ["DEFAULT_MIX", "GroundTruth", "SimConfig", "Simulation", "TYPES", "iter_events",
           "simulate", "summarize", "write_jsonl", "main"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MIN_MS = 60_000
SESSION_GAP_MS = 31 * MIN_MS          # > the engine's default 30 min inactivity timeout

DEFAULT_MIX: dict[str, float] = {
    "one_timer": 0.58,
    "loyal": 0.08,
    "vip": 0.02,
    "discount_hunter": 0.07,
    "full_price": 0.06,
    "slowly_churning": 0.06,
    "serial_cart_abandoner": 0.07,
    "unhappy_after_bad_delivery": 0.06,
}

# Per type: gap between shopping trips (days), browse sessions per 30 days, logit offset of
# abandonment, probability to retry an abandoned trip, coupon use, share of sale items picked,
# share of sessions from a sale campaign, chance a browse session puts something in the cart,
# extra basket lines (mean), chance of a pricey product, max orders (None: unlimited).
TYPES: dict[str, dict[str, Any]] = {
    "one_timer": dict(gap=(2, 10), browse=0.4, offset=-0.2, retry=1.0, coupon=0.25, sale=0.35,
                      promo=0.15, casual=0.10, extra=0.4, pricey=0.25, max_orders=1),
    "loyal": dict(gap=(30, 60), browse=0.6, offset=-1.2, retry=0.9, coupon=0.12, sale=0.25,
                  promo=0.10, casual=0.08, extra=0.8, pricey=0.3, max_orders=None),
    "vip": dict(gap=(7, 21), browse=2.0, offset=-1.6, retry=0.95, coupon=0.08, sale=0.15,
                promo=0.05, casual=0.06, extra=1.8, pricey=0.7, max_orders=None),
    "discount_hunter": dict(gap=(40, 100), browse=1.2, offset=-0.2, retry=0.7, coupon=0.7,
                            sale=0.9, promo=0.65, casual=0.15, extra=0.6, pricey=0.15,
                            max_orders=None),
    "full_price": dict(gap=(40, 100), browse=0.5, offset=-0.9, retry=0.85, coupon=0.0, sale=0.0,
                       promo=0.0, casual=0.05, extra=0.6, pricey=0.45, max_orders=None),
    "slowly_churning": dict(gap=(20, 40), browse=0.5, offset=-0.6, retry=1.0, coupon=0.2,
                            sale=0.3, promo=0.15, casual=0.0, extra=0.5, pricey=0.3,
                            max_orders=(3, 6)),
    "serial_cart_abandoner": dict(gap=(15, 40), browse=0.6, offset=3.0, retry=0.25, coupon=0.3,
                                  sale=0.4, promo=0.25, casual=0.45, extra=0.7, pricey=0.35,
                                  max_orders=None),
    "unhappy_after_bad_delivery": dict(gap=(30, 60), browse=0.5, offset=-0.8, retry=0.85,
                                       coupon=0.15, sale=0.3, promo=0.1, casual=0.08, extra=0.5,
                                       pricey=0.3, max_orders=(2, 4)),
}
_VISITOR = dict(gap=None, browse=0.0, offset=0.8, retry=0.0, coupon=0.1, sale=0.35, promo=0.2,
                casual=0.3, extra=0.5, pricey=0.3, max_orders=None)

SHOP = "https://shop.example.com"
CATEGORIES = ("home", "kitchen", "garden", "toys", "books", "fashion", "beauty", "electronics",
              "sports", "stationery")
BRANDS = ("Acme", "Northwind", "Brightway", "Oakridge", "Larkspur", "Bluefin", "Copperleaf",
          "Hollow Pine", "Maple & Co", "Quillon", "Redstone", "Silverline", "Tidewater",
          "Umbra", "Verdant", "Willow Lane")
SEARCH_WORDS = ("gift", "blue", "large", "set", "vintage", "kids", "mini", "eco", "deluxe",
                "organic", "wireless", "cotton")
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_CUM = (0.55, 0.93, 1.0)
DEVICE_LOGIT = {"desktop": 0.0, "tablet": 0.2, "mobile": 0.45}
LOCALES_GBP = ("en-GB", "en-GB", "en-GB", "en-GB", "en-GB", "en-GB", "en-IE", "de-DE", "fr-FR",
               "nl-NL")
PAYMENT_METHODS = ("card", "card", "card", "paypal", "apple_pay", "klarna")
COUPONS = {"SAVE10": 10, "WELCOME15": 15, "SPRING20": 20, "VIP25": 25}
HUNTER_COUPONS = ("SAVE10", "SPRING20", "SPRING20", "WELCOME15")
SALE_CAMPAIGNS = ({"source": "newsletter", "medium": "email", "name": "flash_sale"},
                  {"source": "facebook", "medium": "social", "name": "season_sale"},
                  {"source": "google", "medium": "cpc", "name": "sale_search"})
OTHER_CAMPAIGNS = ({"source": "google", "medium": "cpc", "name": "brand_search"},
                   {"source": "newsletter", "medium": "email", "name": "new_arrivals"},
                   {"source": "affiliate", "medium": "referral", "name": "gift_guides"})
REFERRERS = {"newsletter": "https://mail.example.com/", "facebook": "https://www.facebook.com/",
             "google": "https://www.google.com/", "affiliate": "https://blog.example.org/"}
REFUND_REASONS = ("changed_mind", "damaged", "not_as_described", "wrong_item", "too_late")
CANCEL_REASONS = ("customer_request", "payment_failed", "out_of_stock")
ISSUE_CATEGORIES = ("late", "damaged", "lost", "wrong_item")
TICKET_CATEGORIES = ("order_status", "return", "payment", "product", "account")
GOOD_TEXTS = ("Great quality, fast delivery.", "Exactly as described.", "Lovely, will buy again.")
BAD_TEXTS = ("Parcel arrived weeks late and damaged.", "Never arrived, no answer from support.",
             "Terrible delivery experience.")
# session start hour (UTC) weights: quiet nights, evening peak
_HOUR_W = (1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 5.5, 5, 4.5, 4.5, 5, 5.5, 6.5, 7.5,
           8, 7, 4.5, 2.5)
_HOUR_CUM = tuple(sum(_HOUR_W[: i + 1]) for i in range(24))


@dataclass
class SimConfig:
    n_customers: int = 1000
    days: float = 365
    start: str = "2025-01-01T00:00:00Z"
    seed: int = 7
    late_rate: float = 0.01          # share of events delivered after a later event of their session
    duplicate_rate: float = 0.005    # share of events re-sent as an exact duplicate
    anonymous_visitors: int = 200    # visitors who never log in (guest checkout when they buy)
    anonymous_share: float = 0.3     # share of known customers' sessions that start logged out
    acquisition: float = 0.75        # first visits are spread over this share of the period
    n_products: int = 400
    usd_share: float = 0.0           # customers paying in USD (engine needs a currency rate)
    usd_rate: float = 1.25           # USD per GBP
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))


@dataclass
class GroundTruth:
    # customer_id -> {"type", "churned_at" (ISO or None), "orders", "first_seen", "last_order_at"}
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # session_id -> {"had_cart", "abandoned", "p_abandon" (None without cart), "customer_id"
    #                and/or "anonymous_id", "order_id" (when it ordered)}
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # anonymous visitor id -> {"sessions", "orders"} (visitors who never log in)
    visitors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"customers": self.customers, "sessions": self.sessions, "visitors": self.visitors}


@dataclass
class Simulation:
    config: SimConfig
    events: list[dict[str, Any]]
    truth: GroundTruth


def _money(cents: int) -> float:
    return cents / 100


_DAY_PREFIX: dict[int, str] = {}
_HMS: list[str] = []


def _fmt(ms: int) -> str:
    """``format_time(ms / 1000)`` for integer milliseconds, ~5x faster (same output, tested)."""
    day, rest = divmod(ms, DAY_MS)
    pre = _DAY_PREFIX.get(day)
    if pre is None:
        pre = _DAY_PREFIX[day] = format_time(day * 86400.0)[:11]
        if not _HMS:
            _HMS.extend(f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60)
                        for s in range(60))
    sec, milli = divmod(rest, 1000)
    if milli:
        return f"{pre}{_HMS[sec]}.{milli:03d}Z"
    return f"{pre}{_HMS[sec]}Z"


class _Product:
    __slots__ = ("pid", "sku", "category", "brand", "list_c", "sale_c")

    def __init__(self, pid: str, sku: str, category: str, brand: str, list_c: int, sale_c: int):
        self.pid, self.sku, self.category, self.brand = pid, sku, category, brand
        self.list_c, self.sale_c = list_c, sale_c


class _World:
    """Shared context: config, the one RNG, the product catalogue and the truth."""

    def __init__(self, cfg: SimConfig, truth: GroundTruth | None):
        self.cfg = cfg
        self.rng = Random(cfg.seed)
        self.truth = truth
        self.start_ms = int(round(parse_time(cfg.start) * 1000))
        self.end_ms = self.start_ms + int(round(cfg.days * DAY_MS))
        self.seed = cfg.seed
        rng = self.rng
        products = []
        for i in range(cfg.n_products):
            cat = CATEGORIES[i % len(CATEGORIES)]
            pounds = max(2, int(math.exp(rng.gauss(math.log(16), 0.8))))
            list_c = min(pounds, 400) * 100 - 1
            sale_c = list_c
            if rng.random() < 0.15:
                sale_c = int(round(list_c * (1 - rng.choice((0.1, 0.2, 0.25, 0.3, 0.4)))))
            products.append(_Product(f"p{i + 1:05d}", f"SKU-{cat[:3].upper()}-{i + 1:05d}", cat,
                                     rng.choice(BRANDS), list_c, sale_c))
        self.products = products
        self.sale = [p for p in products if p.sale_c < p.list_c]
        self.regular = [p for p in products if p.sale_c == p.list_c]
        by_price = sorted(self.regular, key=lambda p: (p.list_c, p.pid))
        self.pricey = by_price[len(by_price) // 2:]
        self.pricey_sale = sorted(self.sale, key=lambda p: (p.list_c, p.pid))[len(self.sale) // 2:]


class _Shopper:
    """One known customer or anonymous visitor; ``stream()`` yields (key_ms, seq, event)."""

    def __init__(self, w: _World, idx: int, ctype: str, first_ms: int, customer_id: str | None):
        self.w = w
        self.idx = idx
        self.ctype = ctype
        self.params = TYPES.get(ctype, _VISITOR)
        self.cid = customer_id
        self.first_ms = first_ms
        self.tag = f"{w.seed}-{idx}"
        self.n_events = 0
        self.n_sessions = 0
        self.n_orders = 0
        self.n_abandoned = 0
        self.seq = 0
        self.heap: list[tuple[int, int, dict]] = []
        self.anon_ids: dict[str, str] = {}
        self.churned_ms: int | None = None
        self.bad_ms: int | None = None
        self.last_order_ms: int | None = None
        self.done = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        w, rng = self.w, self.w.rng
        r = rng.random()
        self.device = DEVICES[0] if r < DEVICE_CUM[0] else DEVICES[1] if r < DEVICE_CUM[1] else DEVICES[2]
        usd = self.cid is not None and rng.random() < w.cfg.usd_share
        self.currency = "USD" if usd else "GBP"
        self.rate = w.cfg.usd_rate if usd else 1.0
        self.locale = "en-US" if usd else rng.choice(LOCALES_GBP)
        mo = self.params["max_orders"]
        self.max_orders = rng.randint(*mo) if isinstance(mo, tuple) else (mo or 1 << 30)
        if self.cid is None:
            self.max_orders = 1 << 30
        self.gap_mult = 1.0
        gap = self.params["gap"]
        self.base_gap = rng.uniform(*gap) if gap else 0.0
        if self.cid is None:          # visitor: 1-5 sessions, days apart
            self.visits_left = 1 + min(4, int(rng.expovariate(1.0)))
            self.next_trip = None
            self.next_browse = self.first_ms
        else:
            lo, hi = gap
            if self.ctype == "one_timer":
                self.next_trip = self.first_ms + int(rng.uniform(0, 1) * rng.uniform(lo, hi) * DAY_MS)
            else:
                self.next_trip = self.first_ms + int(rng.uniform(0, lo) * DAY_MS)
            self.next_browse = self.first_ms if rng.random() < 0.5 else None
            if self.next_browse is None:
                self.next_trip = self.first_ms
            self.retry_pending = False
        if w.truth is not None and self.cid is not None:
            w.truth.customers[self.cid] = {"type": self.ctype, "churned_at": None, "orders": 0,
                                           "first_seen": _fmt(self.first_ms),
                                           "last_order_at": None}

    def _browse_after(self, t: int) -> int | None:
        rate = self.params["browse"]
        if rate <= 0:
            return None
        return t + int(self.w.rng.expovariate(rate / 30.0) * DAY_MS)

    def _at_hour(self, t: int) -> int:
        """Move a planned time to a plausible hour of the same day (never earlier than t - 1 day)."""
        rng = self.w.rng
        h = rng.choices(range(24), cum_weights=_HOUR_CUM)[0]
        return (t // DAY_MS) * DAY_MS + h * HOUR_MS + rng.randrange(HOUR_MS)

    # ------------------------------------------------------------------ stream
    def stream(self) -> Iterator[tuple[int, int, dict]]:
        self.setup()
        heap = self.heap
        w = self.w
        prev_end = self.first_ms - SESSION_GAP_MS
        while True:
            nxt = self._next_session(prev_end)
            bound = nxt[0] if nxt is not None else None
            while heap and (bound is None or heap[0][0] < bound):
                yield heapq.heappop(heap)
            if nxt is None:
                break
            start, kind = nxt
            prev_end = self._session(start, kind)
        if w.truth is not None and self.cid is None:
            w.truth.visitors[self.anon_ids[self.device]] = {
                "sessions": self.n_sessions, "orders": self.n_orders}

    def _next_session(self, prev_end: int) -> tuple[int, str] | None:
        """Pick the next session (start ms, kind) or None when the shopper is done."""
        if self.done:
            return None
        w, rng = self.w, self.w.rng
        earliest = prev_end + SESSION_GAP_MS
        limit = w.end_ms - 12 * HOUR_MS
        if self.cid is None:
            if self.visits_left <= 0:
                return None
            self.visits_left -= 1
            t = self.next_browse
            self.next_browse = t + int(rng.uniform(0.5, 20) * DAY_MS)
            start = max(earliest, self._at_hour(t) if t > self.first_ms else t)
            if start >= limit:
                return None
            return start, ("cart" if rng.random() < self.params["casual"] else "browse")
        trip, browse = self.next_trip, self.next_browse
        if trip is None and browse is None:
            return None
        if browse is not None and (trip is None or browse < trip):
            self.next_browse = None
            start, kind = browse, "browse"
        else:
            self.next_trip = None
            start, kind = trip, "trip"
        if start != self.first_ms and not self.retry_pending:
            start = self._at_hour(start)
        start = max(start, earliest)
        if start >= limit:
            self.done = True
            return None
        if kind == "browse" and rng.random() < self.params["casual"]:
            kind = "cart"
        return start, kind

    # ------------------------------------------------------------------ events
    def _push(self, key: int, ev: dict) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (key, self.seq, ev))

    def _emit_session(self, evs: list[tuple[int, dict]]) -> None:
        """Assign sent_at and delivery keys (late / duplicate perturbations) and queue events."""
        cfg = self.w.cfg
        r = self.w.rng.random
        uni = self.w.rng.uniform
        n = len(evs)
        late_p = cfg.late_rate * n / (n - 1) if n > 1 else 0.0
        dup_p = cfg.duplicate_rate
        for i, (occ, ev) in enumerate(evs):
            if i + 1 < n and r() < late_p:
                key = evs[i + 1][0] + int(uni(1000, 120000))
                sent = key
            else:
                key = occ
                sent = occ + 3 + int(r() * r() * 2500)
            ev["occurred_at"] = _fmt(occ)
            ev["sent_at"] = _fmt(sent)
            self._push(key, ev)
            if r() < dup_p:
                self._push(key + int(uni(500, 60000)), copy.deepcopy(ev))

    def _new_event(self, typ: str, sid: str, cid: str | None, aid: str | None,
                   ctx: dict, fields: dict) -> dict:
        self.n_events += 1
        ev: dict[str, Any] = {"event_id": f"e{self.tag}-{self.n_events}", "type": typ,
                              "occurred_at": None, "sent_at": None}
        if cid is not None:
            ev["customer_id"] = cid
        if aid is not None:
            ev["anonymous_id"] = aid
        ev["session_id"] = sid
        ev["schema_version"] = "1"
        ev["context"] = ctx
        ev.update(fields)
        return ev

    def _price(self, cents: int) -> int:
        return cents if self.rate == 1.0 else int(round(cents * self.rate))

    def _session(self, start: int, kind: str) -> int:
        """Generate one web session starting at ``start``; return the time of its last event."""
        w = self.w
        rng = w.rng
        r = rng.random
        p = self.params
        known = self.cid is not None
        self.n_sessions += 1
        sid = f"s{self.tag}-{self.n_sessions}"
        device = self.device if not known or r() < 0.88 else rng.choice(DEVICES)
        aid = self.anon_ids.get(device)
        if aid is None:
            aid = self.anon_ids[device] = f"a{rng.getrandbits(64):016x}"
        logged_in = known and r() >= w.cfg.anonymous_share
        t_aid = None if logged_in else aid        # the truth names the anonymous id if used
        cur_cid = self.cid if logged_in else None
        cur_aid = None if logged_in else aid
        promo = r() < p["promo"]
        if promo:
            campaign = rng.choice(SALE_CAMPAIGNS)
            promo_pct = rng.choice((10, 15, 20, 25, 30))
        else:
            campaign = rng.choice(OTHER_CAMPAIGNS) if r() < 0.2 else None
            promo_pct = 0
        ctx: dict[str, Any] = {"device": {"type": device}, "locale": self.locale}
        if campaign is not None:
            ctx["campaign"] = dict(campaign)
        evs: list[tuple[int, dict]] = []
        t = start
        currency = self.currency
        page_views = 0
        discount_seen = promo
        last_url = REFERRERS[campaign["source"]] if campaign else (
            "https://www.google.com/" if r() < 0.4 else None)

        def gap() -> int:
            return max(1000, min(600_000, int(math.exp(rng.gauss(9.9, 0.9)))))

        def emit(typ: str, fields: dict) -> None:
            evs.append((t, self._new_event(typ, sid, cur_cid, cur_aid, ctx, fields)))

        def page(page_type: str, path: str) -> None:
            nonlocal page_views, last_url
            url = SHOP + path
            emit("page_view", {"url": url, "path": path, "referrer": last_url,
                               "page_type": page_type})
            last_url = url
            page_views += 1

        def shown_price(prod: _Product) -> int:
            base = prod.sale_c
            if promo_pct:
                base = min(base, int(round(prod.list_c * (100 - promo_pct) / 100)))
            return base

        def pick() -> _Product:
            if r() < p["sale"]:
                pool = w.pricey_sale if r() < p["pricey"] else w.sale
            elif promo_pct and p["sale"] > 0:
                pool = w.products
            else:
                pool = w.pricey if r() < p["pricey"] else w.regular
            return pool[int(r() * len(pool))]

        def view(prod: _Product) -> None:
            nonlocal t, discount_seen
            page("product", f"/p/{prod.pid}")
            t += 200 + int(r() * 1300)
            price = shown_price(prod)
            if price < prod.list_c:
                discount_seen = True
            emit("product_viewed", {"product_id": prod.pid, "sku": prod.sku,
                                    "category": prod.category, "brand": prod.brand,
                                    "price": _money(self._price(price)),
                                    "list_price": _money(self._price(prod.list_c)),
                                    "currency": currency})

        def login() -> None:
            nonlocal cur_cid, logged_in
            cur_cid = self.cid
            logged_in = True
            page("account", "/account/login")

        def browse_step() -> None:
            nonlocal t
            x = r()
            if x < 0.3:
                page("category", f"/c/{rng.choice(CATEGORIES)}")
            elif x < 0.82:
                view(pick())
            else:
                q = f"{rng.choice(SEARCH_WORDS)} {rng.choice(CATEGORIES)}"
                page("search", "/search")
                t += 300 + int(r() * 700)
                emit("search", {"query": q, "results_count": int(r() * r() * 120)})
            t += gap()

        # landing
        if campaign is not None and r() < 0.6:
            view(pick())
        else:
            page("home", "/")
        t += gap()
        wants_cart = kind in ("trip", "cart")
        steps = int(rng.expovariate(1 / 1.5)) + (0 if wants_cart else 1)
        login_at = -1
        if known and not logged_in and not wants_cart and r() < 0.3:
            login_at = int(r() * steps)
        for i in range(min(steps, 40)):
            if i == login_at:
                login()
                t += gap()
            browse_step()

        truth = w.truth
        if not wants_cart:
            if truth is not None:
                truth.sessions[sid] = self._sess_truth(False, False, None, t_aid)
            self._emit_session(evs)
            last = evs[-1][0]
            if known:
                self.next_browse = self._browse_after(last)
            return last

        # ---- cart
        cart_id = f"cart{self.tag}-{self.n_sessions}"
        cart: dict[str, list] = {}       # pid -> [product, qty, unit price cents]
        n_lines = 1 + min(5, int(rng.expovariate(1 / p["extra"]))) if p["extra"] else 1
        units = 0
        value = 0

        def cart_event(typ: str, prod: _Product, qty: int, price: int) -> None:
            """product_added / product_removed with the cart's state after it."""
            emit(typ, {"cart_id": cart_id, "product_id": prod.pid, "quantity": qty,
                       "price": _money(self._price(price)),
                       "list_price": _money(self._price(prod.list_c)),
                       "currency": currency,
                       "cart_total_after": _money(self._price(value)),
                       "cart_item_count": units})

        for li in range(n_lines):
            prod = pick()
            if r() < 0.7:                # else a quick add from a listing page
                view(prod)
                t += gap()
            x = r()
            qty = 1 if x < 0.8 else 2 if x < 0.95 else 3 + int(r() * 2)
            price = shown_price(prod)
            line = cart.get(prod.pid)
            if line is None:
                cart[prod.pid] = line = [prod, 0, price]
            line[1] += qty
            units += qty
            value += qty * price
            cart_event("product_added", prod, qty, price)
            t += gap()
            if li + 1 < n_lines and r() < 0.4:
                browse_step()
        if len(cart) >= 2 and r() < 0.12:
            pid = next(iter(cart))
            prod, qty, price = cart.pop(pid)
            units -= qty
            value -= qty * price
            cart_event("product_removed", prod, qty, price)
            t += gap()
        page("cart", "/cart")
        t += gap()

        z = (0.8 + p["offset"] + 0.55 * math.log(max(value, 100) / 4000) - 0.10 * (units - 1)
             - 0.07 * min(page_views, 25) - 0.55 * math.log1p(self.n_orders)
             + 0.35 * math.log1p(self.n_abandoned) - 0.6 * discount_seen
             + DEVICE_LOGIT[device] + 0.5 * (not logged_in) + 0.9 * (kind == "cart")
             + rng.gauss(0, 0.4))
        p_ab = min(0.999, max(0.001, 1 / (1 + math.exp(-z))))
        abandoned = r() < p_ab
        coupon = None
        if not abandoned and known and r() < p["coupon"]:
            coupon = rng.choice(HUNTER_COUPONS) if self.ctype == "discount_hunter" else (
                "WELCOME15" if self.n_orders == 0 else "VIP25" if self.ctype == "vip" else "SAVE10")
        reach_checkout = not abandoned or r() < 0.3
        order_id = None
        if reach_checkout:
            if known and not logged_in:
                login()
                t += gap()
            checkout_id = f"co{self.tag}-{self.n_sessions}"
            pay = rng.choice(PAYMENT_METHODS)
            pct = COUPONS[coupon] if coupon else 0
            line_disc = {pid: int(round(q * pr * pct / 100)) for pid, (_, q, pr) in cart.items()}
            disc = sum(line_disc.values())
            page("checkout", "/checkout")
            t += 500 + int(r() * 3000)
            cfields = {"cart_id": cart_id, "checkout_id": checkout_id, "step": 1,
                       "value": _money(self._price(value - disc)), "currency": currency,
                       "payment_method": pay}
            if coupon:
                cfields["coupon"] = coupon
            emit("checkout_started", cfields)
            t += gap()
            if not abandoned:
                emit("checkout_step", dict(cfields, step=2))
                t += gap()
                order_id = f"o{self.tag}-{self.n_sessions}"
                self._order(emit, order_id, cart_id, cart, line_disc, coupon)
        if abandoned:
            self.n_abandoned += 1
        if truth is not None:
            truth.sessions[sid] = self._sess_truth(True, abandoned, round(p_ab, 6), t_aid,
                                                   order_id)
        self._emit_session(evs)
        last = evs[-1][0]
        if self.cid is not None:
            self._after_cart(kind, last, order_id, sid, device, abandoned)
        elif order_id is not None:
            self.n_orders += 1
        return last

    def _sess_truth(self, had_cart: bool, abandoned: bool, p_ab: float | None, aid: str | None,
                    order_id: str | None = None) -> dict:
        d: dict[str, Any] = {"had_cart": had_cart, "abandoned": abandoned, "p_abandon": p_ab}
        if self.cid is not None:
            d["customer_id"] = self.cid
        if aid is not None:
            d["anonymous_id"] = aid
        if order_id is not None:
            d["order_id"] = order_id
        return d

    def _order(self, emit, order_id: str, cart_id: str, cart: dict, line_disc: dict,
               coupon: str | None) -> None:
        lines = []
        subtotal = 0
        discount = 0
        for pid, (prod, qty, price) in cart.items():
            pr = self._price(price)
            ld = self._price(line_disc[pid])
            subtotal += qty * pr
            discount += ld
            lines.append({"product_id": pid, "quantity": qty, "price": _money(pr),
                          "list_price": _money(self._price(prod.list_c)), "discount": _money(ld)})
        usd = self.currency == "USD"
        net = subtotal - discount
        shipping = 0 if net >= self._price(5000) else (499 if usd else 399)
        tax = int(round((net + shipping) * 0.07)) if usd else 0
        total = net + shipping + tax
        emit("order_completed", {"order_id": order_id, "cart_id": cart_id,
                                 "currency": self.currency, "subtotal": _money(subtotal),
                                 "discount": _money(discount), "shipping": _money(shipping),
                                 "tax": _money(tax), "total": _money(total), "coupon": coupon,
                                 "lines": lines})
        self._last_order = (order_id, lines, total)

    # ------------------------------------------------------------------ after a cart session
    def _after_cart(self, kind: str, t: int, order_id: str | None, sid: str, device: str,
                    abandoned: bool) -> None:
        w, rng = self.w, self.w.rng
        p = self.params
        truth = w.truth
        self.retry_pending = False
        if order_id is None:
            if kind == "trip":
                if rng.random() < p["retry"]:
                    self.next_trip = t + int(rng.uniform(1, 72) * HOUR_MS)
                    self.retry_pending = True
                else:
                    self._schedule_trip(t)
            self.next_browse = self.next_browse or self._browse_after(t)
            return
        self.n_orders += 1
        self.last_order_ms = t
        bad = self.ctype == "unhappy_after_bad_delivery" and self.n_orders >= self.max_orders
        self._post_order(t, sid, device, bad)
        if truth is not None:
            c = truth.customers[self.cid]
            c["orders"] = self.n_orders
            c["last_order_at"] = _fmt(t)
        if self.n_orders >= self.max_orders:
            self.done = True
            self.churned_ms = t
            if truth is not None:
                truth.customers[self.cid]["churned_at"] = _fmt(t)
                if self.bad_ms is not None:
                    truth.customers[self.cid]["bad_experience_at"] = _fmt(self.bad_ms)
            return
        if self.ctype == "slowly_churning":
            self.gap_mult *= rng.uniform(1.3, 1.8)
        self._schedule_trip(t)
        if kind == "cart" or self.next_browse is None:
            self.next_browse = self._browse_after(t)

    def _schedule_trip(self, t: int) -> None:
        rng = self.w.rng
        if self.ctype == "slowly_churning":      # base gap x growth so far, +-10%
            days = self.base_gap * self.gap_mult * rng.uniform(0.9, 1.1)
        else:
            days = rng.uniform(*self.params["gap"])
        self.next_trip = t + int(days * DAY_MS)

    def _post_order(self, t: int, sid: str, device: str, bad: bool) -> None:
        """Queue cancellations, refunds, delivery issues, tickets and reviews of an order."""
        w, rng = self.w, self.w.rng
        r = rng.random
        order_id, lines, total = self._last_order
        ctx = {"device": {"type": device}, "locale": self.locale}
        cid = self.cid
        end = w.end_ms
        out: list[tuple[int, dict]] = []

        def add(at: int, typ: str, fields: dict) -> None:
            if at < end:
                out.append((at, self._new_event(typ, sid, cid, None, ctx, fields)))

        def refund_fields(amount: int, reason: str, rl: list) -> dict:
            return {"order_id": order_id, "refund_amount": _money(amount),
                    "currency": self.currency, "reason": reason, "lines": rl}

        def refund_lines(ls: list) -> list:
            return [{"product_id": ln["product_id"], "quantity": ln["quantity"],
                     "price": ln["price"],
                     "amount": _money(int(round(ln["quantity"] * ln["price"] * 100))
                                      - int(round(ln["discount"] * 100)))} for ln in ls]

        if not bad and r() < 0.015:
            add(t + int(rng.uniform(5, 120) * MIN_MS), "order_cancelled",
                refund_fields(total, rng.choice(CANCEL_REASONS), refund_lines(lines)))
            self._emit_post(out)
            return
        refund_p = 0.06 if self.ctype == "discount_hunter" else 0.03
        if bad:
            at = t + int(rng.uniform(3, 7) * DAY_MS)
            sev = "critical" if r() < 0.4 else "high"
            self.bad_ms = at if at < end else None
            add(at, "delivery_issue", {"order_id": order_id, "category": rng.choice(("late", "damaged", "lost")),
                                       "severity": sev, "resolved": False})
            at += int(rng.uniform(0.5, 24) * HOUR_MS)
            add(at, "support_ticket", {"order_id": order_id, "category": "order_status",
                                       "severity": sev, "resolved": False})
            if r() < 0.5:
                at += int(rng.uniform(1, 5) * DAY_MS)
                add(at, "order_refunded", refund_fields(total, "damaged", refund_lines(lines)))
            at += int(rng.uniform(0.5, 4) * DAY_MS)
            rf = {"order_id": order_id, "product_id": lines[0]["product_id"],
                  "rating": 1 if r() < 0.6 else 2}
            rf["text"] = rng.choice(BAD_TEXTS)
            add(at, "review_submitted", rf)
            self._emit_post(out)
            return
        if r() < 0.03:
            at = t + int(rng.uniform(2, 8) * DAY_MS)
            sev = rng.choice(("low", "low", "medium", "high"))
            add(at, "delivery_issue", {"order_id": order_id, "category": rng.choice(ISSUE_CATEGORIES),
                                       "severity": sev, "resolved": r() < 0.8})
        if r() < 0.02:
            add(t + int(rng.uniform(0.5, 10) * DAY_MS), "support_ticket",
                {"order_id": order_id, "category": rng.choice(TICKET_CATEGORIES),
                 "severity": rng.choice(("low", "low", "medium")), "resolved": r() < 0.85})
        if r() < refund_p:
            rl = refund_lines(lines[:1 + int(r() * len(lines))])
            amount = sum(int(round(ln["amount"] * 100)) for ln in rl)
            add(t + int(rng.uniform(3, 20) * DAY_MS), "order_refunded",
                refund_fields(min(amount, total), rng.choice(REFUND_REASONS), rl))
        if r() < 0.15:
            x = r()
            rating = 5 if x < 0.55 else 4 if x < 0.85 else 3 if x < 0.95 else 2 if x < 0.98 else 1
            rf = {"order_id": order_id, "product_id": lines[0]["product_id"], "rating": rating}
            if r() < 0.4:
                rf["text"] = rng.choice(GOOD_TEXTS) if rating >= 4 else "It was okay."
            add(t + int(rng.uniform(5, 15) * DAY_MS), "review_submitted", rf)
        self._emit_post(out)

    def _emit_post(self, out: list[tuple[int, dict]]) -> None:
        if not out:
            return
        cfg = self.w.cfg
        r = self.w.rng.random
        for occ, ev in out:
            sent = occ + 3 + int(r() * r() * 2500)
            ev["occurred_at"] = _fmt(occ)
            ev["sent_at"] = _fmt(sent)
            self._push(occ, ev)
            if r() < cfg.duplicate_rate:
                self._push(occ + int(self.w.rng.uniform(500, 60000)), copy.deepcopy(ev))


def _population(w: _World) -> list[_Shopper]:
    cfg = w.cfg
    rng = w.rng
    mix = cfg.mix
    unknown = set(mix) - set(TYPES)
    if unknown:
        raise ValueError(f"unknown customer types in mix: {sorted(unknown)}")
    total = sum(mix.values())
    names = list(mix)
    # largest remainder: exact, stable type counts
    raw = [cfg.n_customers * mix[n] / total for n in names]
    counts = [int(x) for x in raw]
    rest = cfg.n_customers - sum(counts)
    for i in sorted(range(len(names)), key=lambda i: (-(raw[i] - counts[i]), i))[:rest]:
        counts[i] += 1
    types = [n for n, c in zip(names, counts) for _ in range(c)]
    rng.shuffle(types)
    span = max(1, int((w.end_ms - w.start_ms) * cfg.acquisition))
    width = max(6, len(str(cfg.n_customers)))
    shoppers = []
    hours = range(24)
    for i, ctype in enumerate(types):
        first = w.start_ms + int(rng.random() * span)
        hour = rng.choices(hours, cum_weights=_HOUR_CUM)[0]
        first = max(w.start_ms, (first // DAY_MS) * DAY_MS + hour * HOUR_MS + first % HOUR_MS)
        shoppers.append(_Shopper(w, i, ctype, first, f"c{i + 1:0{width}d}"))
    vspan = max(1, w.end_ms - w.start_ms - DAY_MS)
    for j in range(cfg.anonymous_visitors):
        first = w.start_ms + int(rng.random() * vspan)
        hour = rng.choices(hours, cum_weights=_HOUR_CUM)[0]
        first = max(w.start_ms, (first // DAY_MS) * DAY_MS + hour * HOUR_MS + first % HOUR_MS)
        shoppers.append(_Shopper(w, cfg.n_customers + j, "anonymous_visitor", first, None))
    return shoppers


def iter_events(config: SimConfig | None = None, truth: GroundTruth | None = None
                ) -> Iterator[dict[str, Any]]:
    """Yield the simulated events in delivery order, without holding them all in memory.

    Shoppers are started lazily when the merge reaches their first visit and dropped when they
    are done, so memory holds the active shoppers' pending events only. Pass a
    :class:`GroundTruth` to have it filled as the events are produced (it is complete when the
    iterator is exhausted). Same config -> the same events as ``simulate(config).events``.
    """
    cfg = config or SimConfig()
    w = _World(cfg, truth)
    shoppers = _population(w)
    pending = sorted(((s.first_ms, s.idx) for s in shoppers), reverse=True)
    by_idx = {s.idx: s for s in shoppers}
    del shoppers
    heap: list = []
    push, pop, replace = heapq.heappush, heapq.heappop, heapq.heapreplace
    while heap or pending:
        while pending and (not heap or pending[-1][0] <= heap[0][0]):
            _, idx = pending.pop()
            gen = by_idx.pop(idx).stream()
            item = next(gen, None)
            if item is not None:
                push(heap, (item[0], idx, item[1], item[2], gen))
        if not heap:
            continue
        ev = heap[0][3]
        gen = heap[0][4]
        item = next(gen, None)
        if item is None:
            pop(heap)
        else:
            replace(heap, (item[0], heap[0][1], item[1], item[2], gen))
        yield ev


def simulate(config: SimConfig | None = None) -> Simulation:
    """Run the simulator; events in delivery order plus the ground truth."""
    cfg = config or SimConfig()
    truth = GroundTruth()
    events = list(iter_events(cfg, truth))
    return Simulation(cfg, events, truth)


def write_jsonl(events: Iterable[dict], path: str | Path) -> int:
    """Write events as JSON lines (orjson, keys in event order); ``-`` is stdout. Returns count."""
    import orjson

    n = 0
    if str(path) == "-":
        out = sys.stdout.buffer
        for ev in events:
            out.write(orjson.dumps(ev) + b"\n")
            n += 1
        out.flush()
        return n
    p = Path(path)
    if p.suffix == ".gz":
        import gzip
        fh = gzip.open(p, "wb")
    else:
        fh = open(p, "wb")
    with fh:
        buf = []
        for ev in events:
            buf.append(orjson.dumps(ev))
            n += 1
            if len(buf) >= 4096:
                fh.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            fh.write(b"\n".join(buf) + b"\n")
    return n


class _Summary:
    """Running counts over a stream of events (duplicates, late events, types)."""

    def __init__(self) -> None:
        self.n = self.dups = self.late = 0
        self.by_type: dict[str, int] = {}
        self.seen: set[str] = set()
        self.max_t = -math.inf

    def add(self, ev: dict) -> None:
        self.n += 1
        eid = ev["event_id"]
        if eid in self.seen:
            self.dups += 1
            return
        self.seen.add(eid)
        typ = ev["type"]
        self.by_type[typ] = self.by_type.get(typ, 0) + 1
        t = parse_time(ev["occurred_at"])
        if t < self.max_t:
            self.late += 1
        else:
            self.max_t = t

    def result(self, truth: GroundTruth | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"events": self.n, "duplicates": self.dups,
                               "out_of_order": self.late,
                               "by_type": dict(sorted(self.by_type.items()))}
        if truth is None:
            return out
        cust = truth.customers
        buyers = [c for c in cust.values() if c["orders"] > 0]
        orders = sum(c["orders"] for c in cust.values())
        types: dict[str, dict[str, Any]] = {}
        for c in cust.values():
            d = types.setdefault(c["type"], {"customers": 0, "orders": 0, "churned": 0})
            d["customers"] += 1
            d["orders"] += c["orders"]
            d["churned"] += c["churned_at"] is not None
        carts = [s for s in truth.sessions.values() if s["had_cart"]]
        out.update({
            "customers": len(cust),
            "customer_orders": orders,
            "orders_per_customer": round(orders / len(cust), 3) if cust else 0.0,
            "orders_per_buyer": round(orders / len(buyers), 3) if buyers else 0.0,
            "repeat_purchase_rate": round(sum(c["orders"] >= 2 for c in buyers) / len(buyers), 3)
            if buyers else 0.0,
            "sessions": len(truth.sessions),
            "cart_sessions": len(carts),
            "abandonment_rate": round(sum(s["abandoned"] for s in carts) / len(carts), 3)
            if carts else 0.0,
            "mean_p_abandon": round(sum(s["p_abandon"] for s in carts) / len(carts), 3)
            if carts else 0.0,
            "visitors": len(truth.visitors),
            "guest_orders": sum(v["orders"] for v in truth.visitors.values()),
            "types": types,
        })
        return out


def summarize(events: Iterable[dict], truth: GroundTruth | None = None) -> dict[str, Any]:
    """Counts for a report: events by type, duplicates, events delivered after a later one
    (``out_of_order``: occurred before the latest occurred_at delivered so far, duplicates
    excluded), and with the truth: orders per customer, repeat-purchase rate, abandonment."""
    acc = _Summary()
    for ev in events:
        acc.add(ev)
    return acc.result(truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.simulator",
                                 description="Seeded shopper simulator with ground truth.")
    d = SimConfig()
    ap.add_argument("--customers", type=int, default=d.n_customers)
    ap.add_argument("--days", type=float, default=d.days)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--start", default=d.start)
    ap.add_argument("--visitors", type=int, default=d.anonymous_visitors,
                    help="anonymous visitors who never log in")
    ap.add_argument("--anonymous-share", type=float, default=d.anonymous_share)
    ap.add_argument("--late-rate", type=float, default=d.late_rate)
    ap.add_argument("--duplicate-rate", type=float, default=d.duplicate_rate)
    ap.add_argument("--usd-share", type=float, default=d.usd_share)
    ap.add_argument("--out", default="-", help="JSONL file (.gz ok), - for stdout")
    ap.add_argument("--truth", default=None, help="write the ground truth as JSON here")
    a = ap.parse_args(argv)
    cfg = SimConfig(n_customers=a.customers, days=a.days, start=a.start, seed=a.seed,
                    late_rate=a.late_rate, duplicate_rate=a.duplicate_rate,
                    anonymous_visitors=a.visitors, anonymous_share=a.anonymous_share,
                    usd_share=a.usd_share)
    truth = GroundTruth()
    acc = _Summary()
    t0 = time.perf_counter()

    def tee(evs: Iterator[dict]) -> Iterator[dict]:
        for ev in evs:
            acc.add(ev)
            yield ev

    n = write_jsonl(tee(iter_events(cfg, truth)), a.out)
    dt = time.perf_counter() - t0
    if a.truth:
        import orjson
        Path(a.truth).write_bytes(orjson.dumps({"config": asdict(cfg), **truth.to_dict()},
                                               option=orjson.OPT_INDENT_2))
    s = acc.result(truth)
    s["seconds"] = round(dt, 2)
    s["events_per_second"] = int(n / dt) if dt > 0 else None
    import orjson
    sys.stderr.write(orjson.dumps(s, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
