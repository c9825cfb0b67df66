"""Scripted scenarios: every default segment is entered and left, hysteresis, dwell,
time-based changes with no new event, erasure, identity linking, late events."""

from __future__ import annotations

from collections import Counter

import pytest

from models.clock import format_time
from models.config import EngineConfig
from models.engine import Engine, ProcessingError
from models.segments import load_catalog, parse_catalog
from tests.eventkit import Shop


class CartRiskScorer:
    """Test double of the Scorer protocol: abandonment risk from the cart size only."""

    versions = {"abandon": "test-1"}

    def score(self, key, state, features, now):
        risk = 0.9 if features["cart_items"] >= 2 else 0.1
        return {"abandon_risk": risk if features["session_open"] else None,
                "reasons": {"abandon_risk": [{"feature": "cart_items", "contribution": 1.0}]}}

    def on_event(self, *a):
        pass

    def on_session_end(self, *a):
        pass

    def on_time(self, *a):
        pass

    def next_due(self, *a):
        return None


def run(engine: Engine, events: list[dict], until: float | None = None) -> list[dict]:
    out: list[dict] = []
    for ev in sorted(events, key=lambda e: e["occurred_at"]):
        out += engine.process(ev)
    if until is not None:
        out += engine.advance(until)
    return out


def story(shop: Shop) -> list[dict]:
    ev: list[dict] = []
    # cA: first order, second order, then the second is cancelled
    ev += [shop.order("cA", 0, 80), shop.order("cA", 30, 80, order_id="oA2"), shop.cancel("cA", 31, "oA2")]
    # cB: a single order, then quiet for 200 days, then back
    ev += [shop.order("cB", 0, 50), shop.order("cB", 200, 50)]
    # cC: five big orders ten days apart, then quiet
    ev += [shop.order("cC", d, 250) for d in (0, 10, 20, 30, 40)]
    # cD: full price, big, then a refund, then discounted, then full price again
    ev += [shop.order("cD", d, 300, order_id=f"oD{d}") for d in (0, 1, 2)]
    ev += [shop.refund("cD", 10, "oD0", 600.0)]
    ev += [shop.order("cD", d, 20, list_total=40) for d in (11, 12, 13, 14, 15, 16)]
    ev += [shop.order("cD", d, 20) for d in range(25, 32)]
    # cE: leaves a cart, orders the next day
    ev += [shop.view("cE", 0), shop.add("cE", 0, minute=1), shop.order("cE", 1, 20)]
    # cF: a delivery problem, then a good review
    ev += [shop.order("cF", 0, 40), shop.delivery_issue("cF", 2), shop.review("cF", 3, 5)]
    # cG: an anonymous visitor with a full cart who leaves
    ev += [shop.add("vG", 0, minute=0, anonymous=True), shop.add("vG", 0, minute=2, anonymous=True, product_id="p2")]
    return ev


def test_every_default_segment_is_entered_and_left():
    shop = Shop()
    engine = Engine(scorer=CartRiskScorer())
    out = run(engine, story(shop), until=shop.at(600))
    seen = {(c["segment"], c["change"]) for c in out}
    for name in load_catalog().segments:
        assert (name, "entered") in seen, name
        assert (name, "exited") in seen, name


def test_time_based_change_fires_without_new_event_from_that_customer():
    shop = Shop()
    engine = Engine()
    engine.process(shop.order("cB", 0, 50))
    # another customer's event 91 days later moves the watermark past cB's due time
    out = engine.process(shop.view("other", 91))
    mine = [c for c in out if c["customer_id"] == "cB"]
    by_seg = {(c["segment"], c["change"]): c for c in mine}
    assert ("one_time_buyer", "entered") in by_seg
    change = by_seg[("one_time_buyer", "entered")]
    assert change["trigger"] == "timer" and change["cause_event_id"] is None
    assert change["at"] == format_time(shop.at(90))          # exactly at its due time
    assert by_seg[("first_time", "exited")]["at"] == format_time(shop.at(60))
    assert change["reason"]["values"]["days_since_last_order"] == 90.0


def test_due_time_is_exact_whichever_way_the_timer_fires():
    """Through the watermark or through the customer's own next event: same facts."""
    shop = Shop()
    a, b = Engine(), Engine()
    e1, e2 = shop.order("c", 0, 50), shop.order("c", 100, 50)
    a.process(e1)
    via_watermark = a.advance(shop.at(99)) + a.process(e2)
    b.process(e1)
    via_own_event = b.process(e2)
    key = lambda cs: sorted((c["event_id"], c["at"], c["segment"], c["change"]) for c in cs)  # noqa: E731
    assert key(via_watermark) == key(via_own_event)


def test_hysteresis_no_flapping_around_a_threshold():
    shop = Shop()
    events = [shop.order("c", 0, 490, order_id="first"), shop.order("c", 1, 20, order_id="o1")]
    for i in range(10):  # net revenue wobbles 490 <-> 510 around the 500 entry level
        events.append(shop.refund("c", 2 + 2 * i, "o1", 20.0))
        events.append(shop.order("c", 3 + 2 * i, 20, order_id=f"w{i}"))
    out = run(Engine(), events)
    moves = Counter(c["change"] for c in out if c["segment"] == "big_spender")
    assert moves == {"entered": 1}
    # the same wobble against a definition without hysteresis flaps: the test can fail
    flappy = parse_catalog(b'version = "x"\n[segments.big_spender]\nenter = "net_revenue >= 500"\n'
                           b'exit = "net_revenue < 500"\n')
    out = run(Engine(catalog=flappy), events)
    moves = Counter(c["change"] for c in out if c["segment"] == "big_spender")
    assert moves["entered"] == 11 and moves["exited"] == 10


def test_min_dwell_holds_a_member_until_it_has_passed():
    shop = Shop()
    engine = Engine()
    out = run(engine, [shop.order("cF", 0, 40), shop.delivery_issue("cF", 2), shop.review("cF", 3, 5)])
    assert ("negative_experience", "entered") in {(c["segment"], c["change"]) for c in out}
    assert not [c for c in out if c["segment"] == "negative_experience" and c["change"] == "exited"]
    out = engine.advance(shop.at(30))
    exits = [c for c in out if c["segment"] == "negative_experience"]
    assert len(exits) == 1 and exits[0]["change"] == "exited"
    assert exits[0]["at"] == format_time(shop.at(2 + 7))      # entered day 2, dwell 7 days


def test_change_event_carries_previous_and_new_sets_reason_and_versions():
    shop = Shop()
    engine = Engine()
    engine.process(shop.order("c", 0, 80))
    e2 = shop.order("c", 30, 80)
    out = engine.process(e2)
    entered = next(c for c in out if c["segment"] == "repeat")
    assert entered["previous_segments"] == ["active", "first_time"]
    assert entered["segments"] == ["active", "repeat"]
    assert entered["cause_event_id"] == e2["event_id"] and entered["trigger"] == "event"
    assert entered["reason"]["rule"] == "net_orders >= 2"
    assert entered["reason"]["values"] == {"net_orders": 2}
    assert entered["definition_version"] == engine.catalog.definition_version
    assert entered["scores"]["clv_historical"] == 160.0
    assert len(entered["event_id"]) == 32


def test_duplicates_and_repeated_orders_are_dropped():
    shop = Shop()
    engine = Engine()
    e = shop.order("c", 0, 80, order_id="same")
    first = engine.process(e)
    assert first and engine.process(dict(e)) == []          # same event id
    again = dict(e, event_id="another-id")                  # same order re-sent
    engine.process(again)
    state = engine.state_of("c")
    assert state.orders == 1 and state.gross_revenue == 80.0
    assert engine.counters["duplicates"] == 1 and engine.counters["duplicate_orders"] == 1


def test_position_replay_is_skipped_exactly():
    shop = Shop()
    engine = Engine()
    e = shop.order("c", 0, 80)
    engine.process(e, position=("shop.orders:0", 5))
    assert engine.process(shop.order("c", 1, 80), position=("shop.orders:0", 5)) == []
    assert engine.state_of("c").orders == 1
    engine.process(shop.order("c", 1, 80), position=("shop.orders:0", 6))
    assert engine.state_of("c").orders == 2


def test_late_event_is_counted_and_applied():
    shop = Shop()
    engine = Engine(EngineConfig(allowed_lateness=60.0))
    engine.process(shop.order("a", 10, 50))
    late = shop.order("b", 9, 70)                           # a day older than the watermark
    engine.process(late)
    assert engine.counters["late_events"] == 1
    assert engine.state_of("b").orders == 1 and engine.state_of("b").gross_revenue == 70.0


def test_cart_abandoned_when_session_times_out_then_cleared_by_order():
    shop = Shop()
    engine = Engine()
    out = run(engine, [shop.view("c", 0), shop.add("c", 0, minute=1, price=35.0)])
    out += engine.advance(shop.at(0, minute=31))
    entered = [c for c in out if c["segment"] == "cart_abandoner"]
    assert entered and entered[0]["at"] == format_time(shop.at(0, minute=31))
    state = engine.state_of("c")
    assert state.carts_abandoned == 1 and state.carts_started == 1 and state.session is None
    assert engine.features_of("c")["abandoned_cart_value"] == 35.0
    out = engine.process(shop.order("c", 1, 35))
    assert ("cart_abandoner", "exited") in {(c["segment"], c["change"]) for c in out}


def test_anonymous_visitor_is_linked_when_an_event_carries_both_ids():
    shop = Shop()
    engine = Engine()
    engine.process(shop.add("v1", 0, anonymous=True, price=15.0))
    login = shop.view("c1", 0, minute=2, anonymous_id="v1")
    engine.process(login)
    state = engine.state_of("c1")
    assert engine.state_of("v1") is None
    assert state.aliases == ["v1"] and state.session["cart_items"] == 1 and state.carts_started == 1
    engine.process(shop.order("c1", 0, 15, minute=3))
    assert engine.state_of("c1").carts_abandoned == 0


def test_erasure_forgets_the_customer_and_announces_it():
    shop = Shop()
    engine = Engine()
    engine.process(shop.order("c", 0, 80))
    out = engine.process(shop.erase("c", 1))
    assert [c["type"] for c in out] == ["customer_forgotten"]
    assert out[0]["previous_segments"] == ["active", "first_time"] and out[0]["segments"] == []
    assert engine.state_of("c") is None and "c" in engine.dirty_keys()
    assert [c for c in engine.advance(shop.at(400)) if c["customer_id"] == "c"] == []


def test_unknown_currency_is_a_processing_error_and_state_is_untouched():
    shop = Shop()
    engine = Engine()
    e = shop.order("c", 0, 80)
    e["currency"] = "JPY"
    with pytest.raises(ProcessingError, match="JPY"):
        engine.process(e)
    assert engine.state_of("c") is None
    converted = Engine(EngineConfig(currency_rates={"JPY": 0.005}))
    converted.process(e)
    assert converted.state_of("c").gross_revenue == pytest.approx(0.4)


def test_store_metrics_and_cohorts():
    shop = Shop("2025-01-15T00:00:00Z")
    engine = Engine()
    run(engine, [shop.order("a", 0, 100), shop.order("a", 40, 100), shop.order("a", 70, 100),
                 shop.order("b", 1, 50)])
    s = engine.metrics.summary()
    assert s["customers"] == 2 and s["orders"] == 4
    assert s["repeat_purchase_rate"] == 0.5 and s["orders_per_customer"] == 2.0
    assert s["mean_days_between_orders"] == 35.0 and s["average_clv"] == 175.0
    assert engine.metrics.cohorts["2025-01"] == {"customers": 2, "second": {"1": 1}, "third": {"2": 1}}


def test_dst_day_does_not_break_sessions():
    """Event time is absolute: a session across the 2025-03-30 UK clock change stays one session."""
    engine = Engine()
    base = {"schema_version": "1", "customer_id": "c", "type": "page_view", "url": "u", "path": "/",
            "page_type": "home"}
    engine.process(dict(base, event_id="1", occurred_at="2025-03-30T00:50:00+00:00"))
    engine.process(dict(base, event_id="2", occurred_at="2025-03-30T02:10:00+01:00"))  # 20 min later
    assert engine.state_of("c").sessions == 1


def test_event_far_ahead_of_its_receive_time_is_refused():
    shop = Shop()
    engine = Engine()
    e = shop.order("c", 30, 80)
    with pytest.raises(ProcessingError, match="ahead of the time it was received"):
        engine.process(e, received_at=shop.at(0))
    assert engine.clock.max_seen is None and engine.state_of("c") is None
    assert engine.process(e, received_at=shop.at(30, minute=1))


def test_strict_time_rule_evaluated_exactly_at_its_boundary_still_fires_just_after():
    """Regression: a member evaluated at the very instant of a strict boundary (> 10 days)
    must get the due time just after it, not none (found by the fast/full equivalence test)."""
    cat = parse_catalog(b'version = "x"\n[segments.s]\nenter = "orders >= 1 and days_since_last_order <= 10"\n'
                        b'exit = "days_since_last_order > 10"\n')
    shop = Shop()
    engine = Engine(catalog=cat, full_evaluation=True)
    engine.process(shop.order("c", 0, 10))
    assert engine.process(shop.view("c", 10)) == []        # exactly 10 days: not yet
    out = engine.advance(shop.at(11))
    assert [(c["segment"], c["change"]) for c in out] == [("s", "exited")]
    assert out[0]["at"] == format_time(shop.at(10) + 0.001)


def test_visitor_on_another_engine_is_handed_over_with_its_cart():
    shop = Shop()
    visitors, customers = Engine(), Engine()          # two partitions
    visitors.process(shop.add("v9", 0, anonymous=True, price=12.0))
    login = shop.view("c9", 0, minute=3, anonymous_id="v9")
    assert customers.needs_visitor(login) == "v9"
    exits, state = visitors.export_visitor("v9", login)
    assert visitors.state_of("v9") is None and state is not None
    customers.process(login, visitor=state)
    c = customers.state_of("c9")
    assert c.aliases == ["v9"] and c.session["cart_items"] == 1
    # linked: the visitor's engine has nothing more to hand over
    assert visitors.export_visitor("v9", shop.view("c9", 0, minute=4, anonymous_id="v9")) == ([], None)


def test_linked_visitor_events_replayed_after_a_crash_are_skipped_not_revived():
    """Regression (found by the SIGKILL test): a visitor folded into its customer keeps its
    source positions, so its own events replayed after a crash do not bring it back."""
    shop = Shop()
    engine = Engine()
    add = shop.add("v1", 0, anonymous=True, price=15.0)
    engine.process(add, position=("shop.clickstream:1", 40))
    engine.process(shop.view("c1", 0, minute=2, anonymous_id="v1"), position=("shop.clickstream:3", 7))
    assert engine.state_of("v1") is None
    assert engine.process(add, position=("shop.clickstream:1", 40)) == []        # the replay
    assert engine.state_of("v1") is None and engine.counters["replayed_skipped"] == 1
    assert [c for c in engine.advance(shop.at(30)) if c["customer_id"] == "v1"] == []
    # a genuinely new event of that visitor (logged out again) is its customer's
    views = engine.state_of("c1").page_views
    later = shop.view("v1", 1, anonymous=True)
    engine.process(later, position=("shop.clickstream:1", 41))
    assert engine.state_of("v1") is None
    assert engine.state_of("c1").page_views == views + 1
    # and its replay after a crash is skipped by the visitor's position, not applied twice
    assert engine.process(later, position=("shop.clickstream:1", 41)) == []
    assert engine.state_of("c1").page_views == views + 1


def test_a_linked_visitor_shopping_logged_out_later_is_its_customer():
    """Identity: once a device's anonymous id is linked to a customer, that device's later
    logged-out sessions are the customer's: the cart and its abandonment count for the
    customer (its history feeds the abandonment model), and logging in at checkout leaves no
    orphan visitor behind that would later time out as an abandoned cart."""
    shop = Shop()
    engine = Engine()
    engine.process(shop.view("v1", 0, anonymous=True))
    engine.process(shop.view("c1", 0, minute=1, anonymous_id="v1"))         # logs in: linked
    engine.process(shop.order("c1", 0, minute=3, total=30.0))
    # ten days later, same device, logged out: a cart that is abandoned
    engine.process(shop.view("v1", 10, anonymous=True))
    engine.process(shop.add("v1", 10, minute=1, anonymous=True, price=25.0))
    assert engine.state_of("v1") is None
    c1 = engine.state_of("c1")
    assert c1.session is not None and c1.session["cart_items"] == 1 and c1.carts_started == 1
    changes = engine.advance(shop.at(10, minute=40))
    assert engine.state_of("c1").carts_abandoned == 1
    assert all(c["customer_id"] == "c1" for c in changes)
    # twenty days later: a logged-out cart, then a login at checkout and an order
    engine.process(shop.add("v1", 20, anonymous=True, price=40.0))
    engine.process(shop.view("c1", 20, minute=2, anonymous_id="v1"))
    engine.process(shop.order("c1", 20, minute=4, total=40.0))
    engine.advance(shop.at(21))
    assert engine.state_of("v1") is None                          # no orphan visitor
    c1 = engine.state_of("c1")
    assert (c1.orders, c1.carts_started, c1.carts_abandoned) == (2, 2, 1)
    assert engine.counters["identity_redirects"] == 3


def test_a_visitor_that_came_back_to_life_is_linked_again():
    """A visitor state that reappeared after its link (its customer on another partition, so
    its events could not be redirected) is folded in again at its next login."""
    shop = Shop()
    customers, visitors = Engine(), Engine()
    visitors.process(shop.add("v9", 0, anonymous=True, price=12.0))
    login = shop.view("c9", 0, minute=3, anonymous_id="v9")
    _, state = visitors.export_visitor("v9", login)
    customers.process(login, visitor=state)
    later = shop.view("v9", 5, anonymous=True)
    assert visitors.redirect_of(later) == "c9"      # the caller routes it to the customer
    customers.process(later, as_key="c9")
    assert customers.state_of("c9").page_views == 2 and visitors.state_of("v9") is None
    # without routing (the streaming shell today) the visitor comes back on its partition...
    visitors.process(shop.add("v9", 6, anonymous=True, price=30.0))
    assert visitors.state_of("v9") is not None
    # ...and is folded in again at the next login on the customer's engine
    relogin = shop.view("c9", 6, minute=2, anonymous_id="v9")
    assert customers.needs_visitor(relogin) == "v9"
    _, state = visitors.export_visitor("v9", relogin)
    assert state is not None and visitors.state_of("v9") is None
    customers.process(relogin, visitor=state)
    c9 = customers.state_of("c9")
    assert c9.aliases == ["v9"] and c9.carts_started == 2 and c9.session["cart_items"] == 1


def test_a_link_cut_in_two_by_a_crash_is_completed_on_replay():
    """The customer's state reached the table with the link, the visitor's marker did not
    (a crash between the two writes). Replaying the link event is skipped for the customer
    (its position) and must still retire the visitor, with the same exit changes, so the
    visitor's open cart does not later time out as a second, false abandonment."""
    import copy

    shop = Shop()
    live = Engine()
    live.process(shop.add("v1", 0, anonymous=True, price=15.0), position=("shop.clickstream", 1))
    live.advance(shop.at(0, minute=90))                      # abandoned: a cart abandoner
    live.process(shop.add("v1", 1, anonymous=True, price=15.0), position=("shop.clickstream", 2))
    visitor_before = copy.deepcopy(live.store["v1"])
    login = shop.view("c1", 1, minute=2, anonymous_id="v1")
    first = live.process(login, position=("shop.clickstream", 3))
    # the table after the crash: the customer as written, the visitor as it was before
    restarted = Engine()
    restarted.store["c1"] = copy.deepcopy(live.store["c1"])
    restarted.store["v1"] = visitor_before
    again = restarted.process(login, position=("shop.clickstream", 3))
    assert restarted.state_of("v1") is None and restarted.store["v1"].linked_to == "c1"
    exits = [c for c in first if c["customer_id"] == "v1"]
    assert [(c["segment"], c["change"]) for c in exits] == [("cart_abandoner", "exited")]
    assert again == exits
    assert restarted.counters["links_completed"] == 1
    # nothing for the visitor when its session would have timed out
    assert [c for c in restarted.advance(shop.at(2)) if c["customer_id"] == "v1"] == []
    # an uninterrupted replay of the same event is a plain skip
    assert live.process(login, position=("shop.clickstream", 3)) == []


def test_rules_decide_as_an_independent_evaluator_does():
    """Every rule of the catalogue, compiled to a function over the features, gives what simpleeval gives for the same text, on random features with gaps
    (None) and zeros; a TypeError or a division by zero is False, as in the engine."""
    import random

    import simpleeval

    from models.features import FEATURE_NAMES
    from models.segments import _FUNCTIONS, load_catalog

    rnd = random.Random(11)
    rules = [r for seg in load_catalog().segments.values() for r in (seg.enter, seg.exit)]
    assert len(rules) >= 20

    def value():
        return rnd.choice([None, 0, 0.0, 1, True, False, rnd.randint(-5, 400),
                           rnd.uniform(-10, 2000), rnd.random()])

    for _ in range(400):
        features = {n: value() for n in FEATURE_NAMES}
        for rule in rules:
            try:
                want = bool(simpleeval.SimpleEval(names=features,
                                                  functions=dict(_FUNCTIONS)).eval(rule.text))
            except (TypeError, ZeroDivisionError):
                want = False
            assert rule(features) is want, (rule.text, features)
