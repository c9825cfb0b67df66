"""The shopper simulator: reproducible bytes, a valid envelope and fields on every event, each
customer type showing its behaviour, a learnable abandonment truth, and late / duplicate
deliveries at about the configured rates."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from models.clock import format_time, parse_time
from models.simulator import (DEFAULT_MIX, GroundTruth, SimConfig, _fmt, iter_events, simulate,
                              summarize, write_jsonl)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = SimConfig(n_customers=1500, days=365, seed=5, late_rate=0.01, duplicate_rate=0.005,
                   anonymous_visitors=200)

ENVELOPE = {"event_id", "type", "occurred_at", "sent_at", "session_id", "schema_version",
            "context"}
FIELDS = {
    "page_view": {"url", "path", "referrer", "page_type"},
    "product_viewed": {"product_id", "sku", "category", "brand", "price", "list_price",
                       "currency"},
    "search": {"query", "results_count"},
    "product_added": {"cart_id", "product_id", "quantity", "price", "list_price",
                      "cart_total_after", "cart_item_count"},
    "product_removed": {"cart_id", "product_id", "quantity", "price", "list_price",
                        "cart_total_after", "cart_item_count"},
    "checkout_started": {"cart_id", "checkout_id", "step", "value", "payment_method"},
    "checkout_step": {"cart_id", "checkout_id", "step", "value", "payment_method"},
    "order_completed": {"order_id", "cart_id", "currency", "subtotal", "discount", "shipping",
                        "tax", "total", "coupon", "lines"},
    "order_refunded": {"order_id", "refund_amount", "reason"},
    "order_cancelled": {"order_id", "refund_amount", "reason"},
    "review_submitted": {"rating"},
    "support_ticket": {"order_id", "category", "severity", "resolved"},
    "delivery_issue": {"order_id", "category", "severity", "resolved"},
}
MONEY = {"price", "list_price", "cart_total_after", "value", "subtotal", "discount", "shipping",
         "tax", "total", "refund_amount", "amount"}
PAGE_TYPES = {"home", "category", "product", "cart", "checkout", "search", "account"}
SEVERITIES = {"low", "medium", "high", "critical"}


@pytest.fixture(scope="module")
def sim():
    return simulate(CONFIG)


@pytest.fixture(scope="module")
def unique(sim):
    """Events without the re-sent duplicates (first delivery of each event id)."""
    seen, out = set(), []
    for e in sim.events:
        if e["event_id"] not in seen:
            seen.add(e["event_id"])
            out.append(e)
    return out


@pytest.fixture(scope="module")
def by_customer(unique):
    d = defaultdict(list)
    for e in unique:
        if "customer_id" in e:
            d[e["customer_id"]].append(e)
    for evs in d.values():
        evs.sort(key=lambda e: parse_time(e["occurred_at"]))
    return d


@pytest.fixture(scope="module")
def orders(by_customer):
    return {c: [e for e in evs if e["type"] == "order_completed"] for c, evs in by_customer.items()}


def of_type(sim, ctype):
    return [c for c, d in sim.truth.customers.items() if d["type"] == ctype]


def is_cents(x: float) -> bool:
    return abs(x * 100 - round(x * 100)) < 1e-6


# ---------------------------------------------------------------- reproducibility

def jsonl(events) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def test_same_seed_same_bytes_and_different_seed_differs():
    cfg = SimConfig(n_customers=150, days=120, seed=42, anonymous_visitors=20)
    a, b = jsonl(simulate(cfg).events), jsonl(simulate(cfg).events)
    assert a == b and a.count(b"\n") > 1000
    c = jsonl(simulate(SimConfig(n_customers=150, days=120, seed=43, anonymous_visitors=20)).events)
    assert c != a


def test_same_bytes_in_other_processes_whatever_the_hash_seed(tmp_path):
    outs = []
    for hs in ("1", "2"):
        out, truth = tmp_path / f"e{hs}.jsonl", tmp_path / f"t{hs}.json"
        env = dict(os.environ, PYTHONHASHSEED=hs)
        subprocess.run([sys.executable, "-m", "models.simulator", "--customers", "120", "--days",
                        "90", "--seed", "9", "--out", str(out), "--truth", str(truth)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        outs.append((out.read_bytes(), truth.read_bytes()))
    assert outs[0] == outs[1]
    cfg = SimConfig(n_customers=120, days=90, seed=9)
    assert outs[0][0] == jsonl(simulate(cfg).events)
    truth = orjson.loads(outs[0][1])
    assert len(truth["customers"]) == 120 and truth["sessions"]


def test_streaming_gives_the_same_events_and_truth_as_simulate():
    cfg = SimConfig(n_customers=200, days=150, seed=3, anonymous_visitors=30)
    whole = simulate(cfg)
    truth = GroundTruth()
    streamed = list(iter_events(cfg, truth))
    assert jsonl(streamed) == jsonl(whole.events)
    assert truth == whole.truth


def test_fast_time_format_equals_clock_format_time():
    for ms in (0, 1, 999, 1000, 1_735_689_600_000, 1_735_689_600_123, 1_751_328_000_010,
               4_102_444_799_999, 951_782_400_500):
        assert _fmt(ms) == format_time(ms / 1000)


def test_clock_format_time_equals_the_datetime_way():
    """models.clock.format_time skips datetime for 1970-2099; the same text, rounding of the
    microseconds (half to even, with a carry into the second) included."""
    import random

    from models.clock import _format_datetime

    rnd = random.Random(7)
    edges = [0.0, 0.0000005, 0.0000015, 0.9999994, 0.9999995, 0.9999996, 59.9995, 86399.9999996,
             1_735_689_599.9999995, 1_735_689_600.0005, 4_102_444_799.999, 4_102_444_800.0,
             -0.5, -86400.25, 5e9, 1.7e9 + 0.1234565]
    times = edges + [rnd.uniform(0, 4.2e9) for _ in range(20000)]
    times += [round(rnd.uniform(1.6e9, 1.8e9), rnd.randint(0, 7)) for _ in range(20000)]
    for t in times:
        assert format_time(t) == _format_datetime(t), t


def test_write_jsonl_round_trips(tmp_path):
    cfg = SimConfig(n_customers=40, days=60, seed=1, anonymous_visitors=5)
    events = simulate(cfg).events
    for name in ("e.jsonl", "e.jsonl.gz"):
        path = tmp_path / name
        assert write_jsonl(iter_events(cfg), path) == len(events)
        if name.endswith(".gz"):
            import gzip
            raw = gzip.decompress(path.read_bytes())
        else:
            raw = path.read_bytes()
        assert [orjson.loads(x) for x in raw.splitlines()] == events


# ---------------------------------------------------------------- envelope and fields

def test_every_event_has_the_envelope_and_its_fields(sim):
    t0 = parse_time(CONFIG.start)
    t_end = t0 + CONFIG.days * 86400
    for e in sim.events:
        missing = ENVELOPE - e.keys()
        assert not missing, (missing, e)
        assert e["schema_version"] == "1"
        assert isinstance(e["event_id"], str) and e["event_id"]
        assert isinstance(e["session_id"], str) and e["session_id"]
        assert e.get("customer_id") or e.get("anonymous_id"), e
        for k in ("customer_id", "anonymous_id"):
            assert k not in e or (isinstance(e[k], str) and e[k])
        assert e["occurred_at"].endswith("Z") and e["sent_at"].endswith("Z")
        t, sent = parse_time(e["occurred_at"]), parse_time(e["sent_at"])
        assert t0 <= t < t_end
        assert 0 <= sent - t <= 600, e
        ctx = e["context"]
        assert ctx["device"]["type"] in ("mobile", "desktop", "tablet") and ctx["locale"]
        missing = FIELDS[e["type"]] - e.keys()
        assert not missing, (missing, e)


def test_values_are_sane(sim):
    for e in sim.events:
        typ = e["type"]
        for k in MONEY & e.keys():
            assert isinstance(e[k], float) and e[k] >= 0 and is_cents(e[k]), (k, e)
        for line in e.get("lines") or ():
            assert isinstance(line["quantity"], int) and line["quantity"] >= 1
            for k in MONEY & line.keys():
                assert line[k] >= 0 and is_cents(line[k]), (k, line)
        if "quantity" in e:
            assert isinstance(e["quantity"], int) and e["quantity"] >= 1
        if typ == "page_view":
            assert e["page_type"] in PAGE_TYPES and e["url"].endswith(e["path"])
        elif typ in ("product_added", "product_removed"):
            assert e["price"] <= e["list_price"] and e["cart_item_count"] >= 0
            assert typ == "product_removed" or e["cart_item_count"] >= e["quantity"]
        elif typ in ("checkout_started", "checkout_step"):
            assert isinstance(e["step"], int) and e["step"] >= 1
            assert (typ == "checkout_started") == (e["step"] == 1)
        elif typ == "order_completed":
            assert e["currency"] in ("GBP", "USD") and e["lines"]
            sub = sum(ln["quantity"] * ln["price"] for ln in e["lines"])
            assert abs(sub - e["subtotal"]) < 0.005
            assert abs(sum(ln["discount"] for ln in e["lines"]) - e["discount"]) < 0.005
            total = e["subtotal"] - e["discount"] + e["shipping"] + e["tax"]
            assert abs(total - e["total"]) < 0.005
            assert all(ln["price"] <= ln["list_price"] for ln in e["lines"])
            assert (e["coupon"] is None) == (e["discount"] == 0)
        elif typ in ("order_refunded", "order_cancelled"):
            assert e["reason"] and e["lines"]
            assert all(ln["quantity"] >= 1 and ln["amount"] >= 0 for ln in e["lines"])
        elif typ == "review_submitted":
            assert e.get("order_id") or e.get("product_id")
            assert isinstance(e["rating"], int) and 1 <= e["rating"] <= 5
        elif typ in ("support_ticket", "delivery_issue"):
            assert e["severity"] in SEVERITIES and isinstance(e["resolved"], bool)


def test_refunds_never_exceed_their_order(unique):
    totals = {e["order_id"]: e["total"] for e in unique if e["type"] == "order_completed"}
    refunds = [e for e in unique if e["type"] in ("order_refunded", "order_cancelled")]
    assert refunds
    for e in refunds:
        assert e["order_id"] in totals
        assert e["refund_amount"] <= totals[e["order_id"]] + 1e-9


def test_events_validate_against_the_contract(sim):
    contract = pytest.importorskip("models.contract")
    for e in sim.events:
        contract.validate(orjson.loads(orjson.dumps(e)))


def test_usd_customers_pay_in_usd_and_validate():
    contract = pytest.importorskip("models.contract")
    s = simulate(SimConfig(n_customers=200, days=120, seed=2, usd_share=0.3, anonymous_visitors=0))
    cur = Counter(e["currency"] for e in s.events if e["type"] == "order_completed")
    assert cur["USD"] > 10 and cur["GBP"] > 10
    for e in s.events:
        contract.validate(orjson.loads(orjson.dumps(e)))
        if e["type"] == "order_completed" and e["currency"] == "USD":
            assert e["tax"] > 0 or e["total"] == 0


# ---------------------------------------------------------------- truth and customer types

def test_population_mix_is_exact(sim):
    counts = Counter(d["type"] for d in sim.truth.customers.values())
    assert sum(counts.values()) == CONFIG.n_customers
    for t, share in DEFAULT_MIX.items():
        assert abs(counts[t] - share * CONFIG.n_customers) <= 1


def test_truth_order_counts_match_the_events(sim, orders):
    for cid, d in sim.truth.customers.items():
        assert d["orders"] == len(orders.get(cid, [])), cid


def test_one_timers_order_exactly_once_and_never_return(sim, by_customer, orders):
    ones = of_type(sim, "one_timer")
    n = Counter(len(orders.get(c, [])) for c in ones)
    assert set(n) <= {0, 1}
    assert n[1] >= 0.95 * len(ones)
    for c in ones:
        if orders.get(c):
            t = parse_time(orders[c][0]["occurred_at"])
            after = {e["type"] for e in by_customer[c] if parse_time(e["occurred_at"]) > t}
            assert after <= {"order_cancelled", "order_refunded", "review_submitted",
                             "support_ticket", "delivery_issue"}, after


def _discounted_share(sim, unique, ctype):
    ids = set(of_type(sim, ctype))
    lines = [ln for e in unique if e["type"] == "order_completed" and e.get("customer_id") in ids
             for ln in e["lines"]]
    coupons = [e["coupon"] is not None for e in unique
               if e["type"] == "order_completed" and e.get("customer_id") in ids]
    disc = [ln["price"] < ln["list_price"] or ln["discount"] > 0 for ln in lines]
    return sum(disc) / len(disc), sum(coupons) / len(coupons)


def test_discount_hunters_buy_discounted_and_full_price_buyers_do_not(sim, unique):
    hunter_lines, hunter_coupons = _discounted_share(sim, unique, "discount_hunter")
    full_lines, full_coupons = _discounted_share(sim, unique, "full_price")
    loyal_lines, _ = _discounted_share(sim, unique, "loyal")
    assert hunter_lines > 0.85 and hunter_coupons > 0.5
    assert full_lines == 0.0 and full_coupons == 0.0
    assert full_lines < loyal_lines < hunter_lines


def test_serial_cart_abandoners_abandon_most_carts(sim):
    ctype = {c: d["type"] for c, d in sim.truth.customers.items()}
    carts = defaultdict(list)
    for s in sim.truth.sessions.values():
        if s["had_cart"]:
            carts[ctype.get(s.get("customer_id"), "visitor")].append(s["abandoned"])
    rate = {t: sum(v) / len(v) for t, v in carts.items()}
    assert rate["serial_cart_abandoner"] > 0.85
    others = [r for t, r in rate.items() if t not in ("serial_cart_abandoner", "visitor")]
    assert max(others) < 0.6
    assert rate["visitor"] > 0.6
    assert rate["vip"] < rate["one_timer"]


def _gaps(orders, cid):
    ts = [parse_time(e["occurred_at"]) for e in orders.get(cid, [])]
    return [(b - a) / 86400 for a, b in zip(ts, ts[1:])]


def test_loyal_customers_reorder_every_30_to_60_days_and_vips_more_often(sim, orders, unique):
    loyal = [g for c in of_type(sim, "loyal") for g in _gaps(orders, c)]
    vip = [g for c in of_type(sim, "vip") for g in _gaps(orders, c)]
    assert 25 <= statistics.median(loyal) <= 65
    assert statistics.median(vip) < 20
    aov = {t: statistics.mean(e["total"] for e in unique if e["type"] == "order_completed"
                              and sim.truth.customers.get(e.get("customer_id"), {}).get("type") == t)
           for t in ("vip", "loyal")}
    assert aov["vip"] > 1.3 * aov["loyal"]
    assert all(sim.truth.customers[c]["churned_at"] is None
               for t in ("loyal", "vip", "full_price", "discount_hunter", "serial_cart_abandoner")
               for c in of_type(sim, t))


def test_slowly_churning_gaps_grow_then_they_stop(sim, orders):
    grew = longer = total = 0
    for c in of_type(sim, "slowly_churning"):
        g = _gaps(orders, c)
        if len(g) >= 2:
            total += 1
            grew += all(b > a for a, b in zip(g, g[1:]))
            longer += g[-1] > g[0]
    # retries of abandoned carts and casual cart orders add noise to the growing rhythm
    assert total >= 20 and grew / total > 0.8 and longer / total > 0.9
    churned = [c for c in of_type(sim, "slowly_churning") if sim.truth.customers[c]["churned_at"]]
    assert len(churned) > 10


def test_churned_at_is_at_or_after_the_last_order_and_nothing_is_ordered_after(sim, orders):
    n = 0
    for cid, d in sim.truth.customers.items():
        if d["churned_at"] is None:
            continue
        n += 1
        last = max(parse_time(e["occurred_at"]) for e in orders[cid])
        assert parse_time(d["churned_at"]) >= last
        assert d["last_order_at"] is not None and parse_time(d["last_order_at"]) == last
    assert n > 0.5 * CONFIG.n_customers


def test_unhappy_customers_get_a_bad_delivery_and_a_low_review_then_churn(sim, by_customer, orders):
    checked = 0
    for c in of_type(sim, "unhappy_after_bad_delivery"):
        d = sim.truth.customers[c]
        if not d.get("bad_experience_at"):
            continue
        last = max(parse_time(e["occurred_at"]) for e in orders[c])
        after = [e for e in by_customer[c] if parse_time(e["occurred_at"]) > last]
        issues = [e for e in after if e["type"] == "delivery_issue"]
        assert issues and issues[0]["severity"] in ("high", "critical") and not issues[0]["resolved"]
        reviews = [e for e in after if e["type"] == "review_submitted"]
        if reviews:
            assert reviews[0]["rating"] <= 2
            checked += 1
        assert d["churned_at"] is not None
    assert checked > 20


def test_sessions_are_bursty(unique):
    gaps_in, sessions = [], defaultdict(list)
    for e in unique:
        if e["type"] not in ("order_cancelled", "order_refunded", "review_submitted",
                             "support_ticket", "delivery_issue"):     # after-order events
            sessions[e["session_id"]].append(parse_time(e["occurred_at"]))
    for ts in sessions.values():
        ts.sort()
        gaps_in += [b - a for a, b in zip(ts, ts[1:])]
        assert ts[-1] - ts[0] < 4 * 3600
    assert statistics.median(gaps_in) < 60 and max(gaps_in) <= 600
    starts = defaultdict(list)
    for sid, ts in sessions.items():
        starts[sid.rsplit("-", 1)[0]].append((ts[0], ts[-1]))
    between = []
    for spans in starts.values():
        spans.sort()
        between += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    assert min(between) > 30 * 60 and statistics.median(between) > 86400


# ---------------------------------------------------------------- abandonment truth

def test_abandonment_truth(sim, unique):
    ordered = {e["session_id"] for e in unique if e["type"] == "order_completed"}
    carts = {e["session_id"] for e in unique if e["type"] == "product_added"}
    ps, outcome = [], []
    for sid, s in sim.truth.sessions.items():
        assert s.get("customer_id") or s.get("anonymous_id")
        if s["had_cart"]:
            assert 0 < s["p_abandon"] < 1
            assert sid in carts
            assert (sid in ordered) == (not s["abandoned"]), sid
            ps.append(s["p_abandon"])
            outcome.append(s["abandoned"])
        else:
            assert s["p_abandon"] is None and not s["abandoned"]
            assert sid not in carts and sid not in ordered
    assert len(ps) > 3000
    # calibrated: the outcome is drawn from p
    assert abs(statistics.mean(ps) - statistics.mean(outcome)) < 0.03
    ranked = sorted(zip(ps, outcome))
    k = len(ranked) // 5
    low = statistics.mean(o for _, o in ranked[:k])
    high = statistics.mean(o for _, o in ranked[-k:])
    assert high - low > 0.6


def test_abandonment_depends_on_observable_session_features(sim, unique):
    """Cart sessions on mobile and without a discount abandon more (all else mixed)."""
    device, pages, discount = {}, Counter(), {}
    for e in unique:
        sid = e["session_id"]
        device.setdefault(sid, e["context"]["device"]["type"])
        if e["type"] == "page_view":
            pages[sid] += 1
        if e["type"] == "product_viewed" and e["price"] < e["list_price"]:
            discount[sid] = True
    by = defaultdict(list)
    for sid, s in sim.truth.sessions.items():
        if s["had_cart"]:
            by[device[sid]].append(s["p_abandon"])
            by["discount" if discount.get(sid) else "no_discount"].append(s["p_abandon"])
    assert statistics.mean(by["mobile"]) > statistics.mean(by["desktop"])
    assert statistics.mean(by["discount"]) < statistics.mean(by["no_discount"])


# ---------------------------------------------------------------- identity

def test_logged_out_visitors_log_in_mid_session(sim, unique):
    links = [e for e in unique if e.get("customer_id") and e.get("anonymous_id")]
    first_link = {}
    for e in sorted(links, key=lambda e: parse_time(e["occurred_at"])):   # a late event may
        first_link.setdefault(e["session_id"], e)                          # arrive after others
    assert len(first_link) > 200
    assert all(e["type"] == "page_view" and e["page_type"] == "account"
               for e in first_link.values())
    before = defaultdict(list)
    for e in unique:
        link = first_link.get(e["session_id"])
        if link and parse_time(e["occurred_at"]) < parse_time(link["occurred_at"]):
            before[e["session_id"]].append(e)
    assert before
    for evs in before.values():
        assert all("customer_id" not in e and e.get("anonymous_id") for e in evs)
    # the anonymous id belongs to one customer only
    owner = {}
    for e in links:
        assert owner.setdefault(e["anonymous_id"], e["customer_id"]) == e["customer_id"]


def test_anonymous_visitors_browse_and_sometimes_buy_as_guests(sim, unique):
    anon_only = [e for e in unique if "customer_id" not in e]
    visitor_ids = set(sim.truth.visitors)
    assert len(visitor_ids) == CONFIG.anonymous_visitors
    assert {e["anonymous_id"] for e in anon_only} >= visitor_ids
    guest_orders = [e for e in anon_only if e["type"] == "order_completed"]
    assert all(e["anonymous_id"] in visitor_ids for e in guest_orders)
    assert sum(v["orders"] for v in sim.truth.visitors.values()) == len(guest_orders)


# ---------------------------------------------------------------- delivery perturbations

def test_duplicates_are_exact_and_at_about_the_configured_rate(sim):
    first, dups = {}, 0
    for e in sim.events:
        raw = orjson.dumps(e)
        if e["event_id"] in first:
            dups += 1
            assert first[e["event_id"]] == raw
        else:
            first[e["event_id"]] = raw
    rate = dups / len(first)
    assert 0.6 * CONFIG.duplicate_rate < rate < 1.5 * CONFIG.duplicate_rate, rate


def test_late_events_at_about_the_configured_rate_and_a_few_minutes_late(sim, unique):
    late, max_t, lateness = 0, float("-inf"), []
    last_key = {}
    per_key_late = 0
    for e in unique:
        t = parse_time(e["occurred_at"])
        if t < max_t:
            late += 1
            lateness.append(max_t - t)
        max_t = max(max_t, t)
        key = e.get("customer_id") or e["anonymous_id"]
        if t < last_key.get(key, float("-inf")):
            per_key_late += 1
        last_key[key] = max(t, last_key.get(key, float("-inf")))
    rate = late / len(unique)
    assert 0.6 * CONFIG.late_rate < rate < 1.6 * CONFIG.late_rate, rate
    assert per_key_late > 0.5 * late          # late within the shopper's own stream
    assert max(lateness) < 15 * 60 and statistics.median(lateness) < 5 * 60


def test_no_perturbation_gives_occurred_at_order():
    cfg = SimConfig(n_customers=150, days=90, seed=8, late_rate=0.0, duplicate_rate=0.0)
    events = simulate(cfg).events
    ts = [parse_time(e["occurred_at"]) for e in events]
    assert ts == sorted(ts)
    assert len({e["event_id"] for e in events}) == len(events)


def test_summary_figures(sim):
    s = summarize(sim.events, sim.truth)
    assert s["events"] == len(sim.events)
    assert s["customers"] == CONFIG.n_customers
    assert 1.5 < s["orders_per_customer"] < 3.0
    assert 0.25 < s["repeat_purchase_rate"] < 0.5
    assert 0.4 < s["abandonment_rate"] < 0.75
    assert 30 < len(sim.events) / CONFIG.n_customers < 80
