"""Online models (models/scoring): delayed labels, prediction-time features, scores, snapshots."""

from __future__ import annotations

import json
import math
import pickle

import orjson
import pytest

from models.clock import DAY, MINUTE, format_time
from models.config import EngineConfig
from models.engine import Engine
from models.features import customer_features
from models.profile import apply_order
from models.scoring import HubConfig, ModelHub, SnapshotError
from models.scoring.abandon import ABANDON_ENCODER
from models.scoring.churn import CHURN_ENCODER, churn_values
from models.scoring.encoding import Encoder
from models.session import EPISODE_GAP, last_cart_abandoned, new_abandon_episode
from models.simulator import SimConfig, simulate
from models.state import CustomerState
from tests.eventkit import Shop

CFG = EngineConfig()
T0 = 1_700_000_000.0
KEY = b"test-key"


def order(state: CustomerState, t: float, order_id: str, total: float = 50.0) -> dict:
    """Apply an order to the profile (as the engine does) and return the event."""
    ev = {"event_id": "e-" + order_id, "type": "order_completed", "order_id": order_id,
          "total": total, "currency": "GBP", "lines": [], "customer_id": state.key}
    apply_order(state, ev, t, CFG)
    return ev


def feats(state: CustomerState, now: float) -> dict:
    return customer_features(state, now, CFG)


class SpyLearner:
    """Stands in for the River learner: records what it is taught."""

    def __init__(self, inner):
        self.inner = inner
        self.taught: list[tuple[dict, bool]] = []

    def learn(self, x, y):
        self.taught.append((dict(x), y))
        self.inner.learn(x, y)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def hub_with_spy(**kw) -> tuple[ModelHub, SpyLearner]:
    hub = ModelHub(HubConfig(snapshot_key=KEY, **kw))
    spy = SpyLearner(hub.churn.learner)
    hub.churn.learner = spy
    return hub, spy


def buy(hub: ModelHub, state: CustomerState, t: float, order_id: str) -> None:
    ev = order(state, t, order_id)
    hub.on_event(state.key, state, feats(state, t), ev, t)


def tick(hub: ModelHub, state: CustomerState, t: float) -> None:
    hub.on_time(state.key, state, feats(state, t), t)


# -- churn: delayed labels ---------------------------------------------------------------
def test_churn_label_resolves_once_with_duplicate_order_and_repeated_due_time():
    hub, spy = hub_with_spy()
    s = CustomerState(key="c1", customer_id="c1")
    buy(hub, s, T0, "o1")                       # prediction point at the order
    assert len(s.model_data["churn"]["p"]) == 1
    buy(hub, s, T0 + 40 * DAY, "o2")            # next order within H: label 0
    assert [y for _, y in spy.taught] == [False]
    # the same order again (re-sent under a new event id): the profile does not count it,
    # and the model does not resolve anything a second time
    buy(hub, s, T0 + 40 * DAY, "o2")
    assert [y for _, y in spy.taught] == [False]
    # quiet: the prediction made at the second order resolves 1 when H passes, once
    due = hub.next_due("c1", s, T0 + 40 * DAY)
    assert due == pytest.approx(T0 + 70 * DAY)  # first a checkpoint (30 days)
    t = T0 + 40 * DAY + 90 * DAY
    tick(hub, s, t)
    tick(hub, s, t)                             # the same due time fired twice
    tick(hub, s, t + 1.0)
    assert [y for _, y in spy.taught] == [False, True]
    assert hub.churn.metrics.n == 2


def test_churn_learns_from_prediction_time_features():
    hub, spy = hub_with_spy()
    s = CustomerState(key="c1", customer_id="c1")
    buy(hub, s, T0, "o1")
    recorded = s.model_data["churn"]["p"][0][2]
    tick(hub, s, T0 + 200 * DAY)                 # well past H: label 1, taught with the old inputs
    taught_x, y = spy.taught[0]
    assert y is True
    assert [taught_x[n] for n in CHURN_ENCODER.names] == recorded
    assert taught_x["days_since_last_order"] == 0.0              # as at the order, not 200 days later
    now_x = hub.churn.encoder.encode(churn_values(feats(s, T0 + 200 * DAY), hub.population, 90.0))
    assert now_x["days_since_last_order"] > 5.0


def test_quiet_customer_churn_score_rises_with_event_time():
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    s = CustomerState(key="c1", customer_id="c1")
    for i, d in enumerate((0, 20, 41, 60)):
        buy(hub, s, T0 + d * DAY, f"o{i}")
    last = T0 + 60 * DAY
    scores = [hub.score("c1", s, feats(s, last + d * DAY), last + d * DAY)["churn_risk"]
              for d in (0, 10, 30, 60, 120, 240)]
    assert all(b > a for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 0.5 < scores[-1]


def test_scores_are_valid_probabilities_with_reasons_and_versions():
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    s = CustomerState(key="c1", customer_id="c1")
    buy(hub, s, T0, "o1")
    buy(hub, s, T0 + 30 * DAY, "o2")
    sc = hub.score("c1", s, feats(s, T0 + 50 * DAY), T0 + 50 * DAY)
    assert 0.0 < sc["churn_risk"] < 1.0
    assert sc["abandon_risk"] is None                     # no open cart
    assert sc["clv"] > 0 and sc["clv_simple"] > 0
    assert sc["next_order_at"] > T0 + 30 * DAY
    for model in ("churn_risk", "clv", "next_order_at"):
        reasons = sc["reasons"][model]
        assert reasons and all("feature" in r and "contribution" in r for r in reasons)
    assert set(sc["versions"]) >= {"churn_risk", "abandon_risk", "clv"}
    json.dumps(sc)                                          # serialisable as it is stamped
    json.dumps(s.model_data)


def test_learned_model_takes_over_from_prior_and_explains_linearly():
    hub = ModelHub(HubConfig(snapshot_key=KEY, warmup_labels=20))
    # active customers (ordering every 20 days) and lapsed ones (one order, then nothing)
    for c in range(30):
        s = CustomerState(key=f"a{c}", customer_id=f"a{c}")
        for k in range(12):
            t = T0 + k * 20 * DAY + c * 3600
            buy(hub, s, t, f"a{c}-{k}")
        q = CustomerState(key=f"q{c}", customer_id=f"q{c}")
        buy(hub, q, T0 + c * 3600, f"q{c}-0")
        for d in range(30, 400, 30):
            tick(hub, q, T0 + c * 3600 + d * DAY)
    assert hub.churn.labels >= 20 and hub.churn.weight == 1.0
    s = CustomerState(key="x", customer_id="x")
    buy(hub, s, T0, "x1")
    f = feats(s, T0 + 100 * DAY)
    sc = hub.score("x", s, f, T0 + 100 * DAY)
    assert sc["methods"]["churn_risk"] == "logreg"
    assert len(sc["reasons"]["churn_risk"]) == 3
    # the contributions are w_i * z_i: with the intercept they add up to the logit
    x = hub.churn.encoder.encode(churn_values(f, hub.population, 90.0))
    p, contribs = hub.churn.learner.explain(x)
    assert math.log(p / (1 - p)) == pytest.approx(hub.churn.learner.intercept + sum(c for c, _ in contribs))
    assert p == pytest.approx(hub.churn.learner.river_proba(x))
    # the BG/NBD prior enters as a fixed offset: its contribution is its value minus its mean
    assert hub.churn.learner.offset_feature == "bgnbd_no_order"
    assert [c for c, f in contribs if f == "bgnbd_no_order"] == [
        pytest.approx(x["bgnbd_no_order"] - hub.churn.learner.scaler.means["bgnbd_no_order"])]
    assert "bgnbd_no_order" not in hub.churn.learner.model.weights


# -- cart abandonment --------------------------------------------------------------------
def _session_events(hub, *, order: bool, key="v1", sid="s1", t=T0):
    """An engine with the hub and the events of one anonymous cart session."""
    eng = Engine(scorer=hub)
    base = {"anonymous_id": key, "session_id": sid, "schema_version": "1",
            "context": {"device": {"type": "mobile"}}}
    evs = [dict(base, type="page_view", page_type="home", url="https://x/", path="/"),
           dict(base, type="product_added", cart_id="k", product_id="p1", quantity=1, price=20.0,
                list_price=20.0, cart_total_after=20.0, cart_item_count=1),
           dict(base, type="page_view", page_type="cart", url="https://x/cart", path="/cart")]
    if order:
        evs.append(dict(base, type="order_completed", order_id="o-" + sid, cart_id="k", currency="GBP",
                        subtotal=20.0, discount=0.0, shipping=0.0, tax=0.0, total=20.0,
                        lines=[{"product_id": "p1", "quantity": 1, "price": 20.0}]))
    for i, ev in enumerate(evs):
        ev["event_id"] = f"{sid}-{i}"
        ev["occurred_at"] = ev["sent_at"] = format_time(t + i * MINUTE)
    return eng, evs


def test_abandonment_scored_in_session_and_learned_at_session_end():
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    eng, evs = _session_events(hub, order=False)
    for ev in evs:
        eng.process(ev)
    st = eng.state_of("v1")
    p = st.scores["abandon_risk"]
    assert 0.0 < p < 1.0 and st.scores["reasons"]["abandon_risk"]
    assert len(st.model_data["cart"]["p"]) == 2              # two events held the cart
    assert hub.abandon.labels == 0
    eng.advance(T0 + 3 * MINUTE + 31 * MINUTE)               # inactivity closes the session
    assert hub.abandon.labels == 2 and "cart" not in eng.state_of("v1").model_data
    assert hub.abandon.metrics.positives == 2                # abandoned
    eng.advance(T0 + DAY)                                    # nothing resolves twice
    assert hub.abandon.labels == 2

    hub2 = ModelHub(HubConfig(snapshot_key=KEY))
    eng2, evs2 = _session_events(hub2, order=True, key="v2", sid="s2")
    for ev in evs2:
        eng2.process(ev)
    assert hub2.abandon.labels == 2 and hub2.abandon.metrics.positives == 0   # ordered
    eng2.advance(T0 + DAY)
    assert hub2.abandon.labels == 2


def test_cart_points_stay_bounded_in_long_sessions():
    hub = ModelHub(HubConfig(snapshot_key=KEY, max_cart_points=8))
    eng, evs = _session_events(hub, order=False)
    for ev in evs[:2]:
        eng.process(ev)
    for i in range(100):
        ev = dict(evs[2], event_id=f"x{i}", occurred_at=format_time(T0 + (3 + i) * 10.0))
        ev["sent_at"] = ev["occurred_at"]
        eng.process(ev)
    md = eng.state_of("v1").model_data["cart"]
    assert len(md["p"]) <= 9 and md["k"] >= 8
    assert len(json.dumps(md)) < 4000


# -- snapshots ---------------------------------------------------------------------------
def test_snapshot_round_trip_and_tampered_snapshot_refused(monkeypatch):
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    s = CustomerState(key="c1", customer_id="c1")
    buy(hub, s, T0, "o1")
    tick(hub, s, T0 + 100 * DAY)
    blob = hub.snapshot()
    assert len(blob) < 200_000
    back = ModelHub.restore(blob, KEY)
    assert back.versions == hub.versions and back.churn.labels == hub.churn.labels
    assert back.config.snapshot_key == KEY
    f = feats(s, T0 + 120 * DAY)
    assert back.score("c1", s, f, T0 + 120 * DAY)["churn_risk"] == \
        hub.score("c1", s, f, T0 + 120 * DAY)["churn_risk"]

    # nothing unsigned or tampered is ever unpickled
    calls = []
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: calls.append(1))
    tampered = bytearray(blob)
    tampered[-10] ^= 0xFF
    for bad, key in ((bytes(tampered), KEY), (blob, b"other-key"), (blob[:20], KEY),
                     (b"RSHUB" + b"\x00" * 40 + pickle.dumps({"evil": 1}), KEY), (blob, b"")):
        with pytest.raises(SnapshotError):
            ModelHub.restore(bad, key)
    assert calls == []


def test_snapshot_needs_a_key():
    with pytest.raises(SnapshotError):
        ModelHub(HubConfig()).snapshot()


# -- engine integration ------------------------------------------------------------------
def test_engine_with_hub_on_simulated_traffic():
    sim = simulate(SimConfig(n_customers=150, days=150, seed=3))
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    eng = Engine(scorer=hub)
    for ev in sim.events:
        eng.process(ev)
    d = hub.describe()
    assert d["abandon_risk"]["labels"] > 200 and d["churn_risk"]["labels"] > 50
    assert d["abandon_risk"]["orphaned_sessions"] == 0
    assert d["abandon_risk"]["metrics"]["auc"] > 0.7      # a smoke floor: quality is in bench/
    for st in eng.store.values():
        assert len(json.dumps(st.model_data)) < 4000
        sc = st.scores
        if sc.get("churn_risk") is not None:
            assert 0 < sc["churn_risk"] < 1
        if sc.get("abandon_risk") is not None:
            assert 0 < sc["abandon_risk"] < 1
    json.dumps(d)


# -- cart history (abandonment inputs a2) -------------------------------------------------
def _viewed(shop: Shop, who: str, day: float, minute: float, price: float, list_price: float) -> dict:
    return shop._env("product_viewed", who, day, minute, product_id="p9", price=price,
                     list_price=list_price)


def test_cart_history_kept_in_event_time_where_sessions_close():
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    eng = Engine(scorer=hub)
    shop = Shop()
    timeout = eng.config.session_timeout
    # A, day 0: a discounted product viewed, one added, then gone: abandoned, the first episode
    eng.process(_viewed(shop, "c1", 0, 0, price=15.0, list_price=20.0))
    eng.process(shop.add("c1", 0, 1))
    st = eng.state_of("c1")
    assert (st.items_seen, st.abandon_episodes, st.last_cart_end) == (0, 0, None)   # still open
    assert (st.session["items_seen"], st.session["discounted_seen"]) == (2, 1)
    # B, day 2: its first event closes A first, as of A's inactivity timeout (event time)
    eng.process(shop.add("c1", 2, 0))
    st = eng.state_of("c1")
    assert st.last_cart_end == shop.at(0, 1) + timeout and st.carts_abandoned == 1
    assert (st.abandon_episodes, st.items_seen, st.discounted_items_seen) == (1, 2, 1)
    assert not new_abandon_episode(st)                       # 2 days after an abandoned cart
    eng.advance(shop.at(3))                                  # B abandoned: a retry, same episode
    st = eng.state_of("c1")
    assert (st.carts_abandoned, st.abandon_episodes) == (2, 1)
    b_end = shop.at(2, 0) + timeout
    assert st.last_cart_end == b_end and last_cart_abandoned(st)
    # C, day 3: browsing only does not move the last cart
    eng.process(shop.view("c1", 3, 0))
    eng.advance(shop.at(3, 60))
    assert eng.state_of("c1").last_cart_end == b_end
    # D starts exactly EPISODE_GAP after B closed: not "more than 4 days", no new episode
    d_start = b_end + EPISODE_GAP
    eng.process(shop.add("c1", (d_start - shop.t0) / DAY))
    assert not new_abandon_episode(eng.state_of("c1"))
    eng.advance(d_start + timeout + 1)
    st = eng.state_of("c1")
    assert (st.carts_abandoned, st.abandon_episodes) == (3, 1)
    d_end = d_start + timeout
    # E, day 11 (> 4 days after D, abandoned): a new episode if it is abandoned too
    eng.process(shop.add("c1", 11, 0))
    st = eng.state_of("c1")
    assert new_abandon_episode(st)
    md = st.model_data["cart"]
    v = hub.abandon.values(st, customer_features(st, shop.at(11), CFG), md)
    assert v["abandon_episodes"] == 1 and v["new_cart_4d_after_abandon"] is True
    assert v["abandon_episodes_per_order"] == pytest.approx((1 + 1 + 0.5) / 0.5)
    # closed sessions only: A's view (discounted) and add, B's and D's adds
    assert v["past_discounted_share"] == pytest.approx((1 + 0.3) / (4 + 1))
    assert v["hours_since_last_session"] == pytest.approx((shop.at(11) - d_end) / 3600.0)
    assert v["abandoned_last_session_72h"] is False
    x = hub.abandon.encoder.encode(v)
    assert hub.abandon.encoder.display("abandon_episodes_per_order", x["abandon_episodes_per_order"]) == 5.0
    assert hub.abandon.encoder.display("abandon_episodes", x["abandon_episodes"]) == 1.0
    # ... but E ends in an order: no episode, and the last cart is not an abandoned one
    eng.process(shop.order("c1", 11, 20.0, minute=5))
    st = eng.state_of("c1")
    assert (st.carts_abandoned, st.abandon_episodes, st.orders) == (3, 1, 1)
    assert st.last_cart_end == shop.at(11, 5) and not last_cart_abandoned(st)
    # F, day 16: 5 days after an *ordered* cart: no "new episode after an abandon", but if
    # abandoned it is an episode of its own
    eng.process(shop.add("c1", 16, 0))
    assert not new_abandon_episode(eng.state_of("c1"))
    eng.advance(shop.at(16, 60))
    assert eng.state_of("c1").abandon_episodes == 2
    # G, a day later: the previous session was abandoned within 72 hours
    eng.process(shop.add("c1", 17, 0))
    st = eng.state_of("c1")
    v = hub.abandon.values(st, customer_features(st, shop.at(17), CFG), st.model_data["cart"])
    assert v["abandoned_last_session_72h"] is True
    assert v["hours_since_last_session"] == pytest.approx(24.0 - timeout / 3600.0)
    assert v["abandon_episodes_per_order"] == pytest.approx((2 + 0 + 0.5) / 1.5)


def test_cart_history_follows_a_linked_visitor():
    eng = Engine()
    shop = Shop()
    eng.process(shop.add("a1", 0, 0, anonymous=True))
    eng.advance(shop.at(0, 60))
    assert eng.state_of("a1").abandon_episodes == 1
    eng.process(shop.view("c1", 1, 0, anonymous_id="a1"))       # logs in: the visitor is folded in
    st = eng.state_of("c1")
    assert (st.abandon_episodes, st.items_seen) == (1, 1)
    assert st.last_cart_end == shop.at(0, 0) + eng.config.session_timeout and last_cart_abandoned(st)


def test_state_stored_before_the_cart_history_still_loads_and_runs():
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    eng = Engine(scorer=hub)
    shop = Shop()
    eng.process(shop.add("c1", 0, 0))
    eng.advance(shop.at(0, 60))
    eng.process(shop.add("c1", 1, 0))                            # an open cart session
    doc = orjson.loads(eng.dump_state())
    old = doc["states"]["c1"]
    for name in ("last_cart_end", "abandon_episodes", "items_seen", "discounted_items_seen"):
        del old[name]
    del old["session"]["items_seen"], old["session"]["discounted_seen"]
    eng2 = Engine(scorer=ModelHub(HubConfig(snapshot_key=KEY)))
    eng2.load_state(orjson.dumps(doc))
    st = eng2.state_of("c1")
    assert (st.last_cart_end, st.abandon_episodes, st.items_seen, st.discounted_items_seen) == \
        (None, 0, 0, 0)
    eng2.process(_viewed(shop, "c1", 1, 1, price=5.0, list_price=10.0))
    assert 0.0 < eng2.state_of("c1").scores["abandon_risk"] < 1.0
    eng2.advance(shop.at(2))                                     # the old session closes
    st = eng2.state_of("c1")
    assert st.carts_abandoned == 2 and st.abandon_episodes == 1     # counted from the upgrade on
    assert (st.items_seen, st.discounted_items_seen) == (1, 1)
    assert CustomerState.from_dict(st.to_dict()) == st


def test_snapshot_of_another_abandon_encoding_restores_a_new_abandon_model(monkeypatch):
    import models.scoring.abandon as abandon_mod

    old_spec = [s for s in ABANDON_ENCODER.spec if s[0] not in {
        "abandon_episodes", "new_cart_4d_after_abandon", "abandon_episodes_per_order",
        "past_discounted_share", "hours_since_last_session", "abandoned_last_session_72h"}]
    monkeypatch.setattr(abandon_mod, "ABANDON_ENCODER", Encoder("a1", old_spec))
    old = ModelHub(HubConfig(snapshot_key=KEY))                 # as the code before a2 built it
    monkeypatch.undo()
    eng, evs = _session_events(old, order=False)
    for ev in evs:
        eng.process(ev)
    eng.advance(T0 + DAY)
    s = CustomerState(key="c1", customer_id="c1")
    buy(old, s, T0, "o1")
    tick(old, s, T0 + 100 * DAY)
    assert old.abandon.labels == 2 and old.abandon.encoder.version == "a1"
    _, evs2 = _session_events(old, order=False, sid="s2", t=T0 + 2 * DAY)
    for ev in evs2:                                             # a1 points still pending
        eng.process(ev)
    assert eng.state_of("v1").model_data["cart"]["v"] == "a1"

    back = ModelHub.restore(old.snapshot(), KEY)
    assert back.abandon.encoder is ABANDON_ENCODER and back.abandon.labels == 0
    assert back.churn.labels == old.churn.labels                # the churn model is kept
    eng.scorer = back
    eng.advance(T0 + 3 * DAY)                                   # the a1 points: stale, not learned
    assert back.abandon.labels == 0 and back.abandon.stale_labels == 2
    assert back.versions["abandon_risk"] == "abandon-logreg/a2/0"


def test_compact_remembers_values_and_gives_what_the_formula_gives():
    """models.scoring.encoding.compact keeps the first values it rounded: the same floats
    (sign of zero included) as rounding every time, before and after its memory is full."""
    import math
    import random

    from models.scoring import encoding

    rnd = random.Random(3)
    values = [0.0, -0.0, 0, False, True, 1, 1.0, -1.0, 1e-9, 123456.0, 0.1 + 0.2, math.inf]
    values += [rnd.choice([rnd.uniform(-1e6, 1e6), rnd.random(), float(rnd.randint(0, 50)),
                           math.log1p(rnd.randint(0, 500))]) for _ in range(3 * encoding._COMPACT_KEPT)]
    for v in values + values:                     # the second round mostly from the memory
        got = encoding.compact(v)
        want = float(f"{v:.5g}")
        assert got == want and math.copysign(1, got) == math.copysign(1, want), v
    assert len(encoding._COMPACTED) == encoding._COMPACT_KEPT


def test_versions_follow_every_label_learned_and_every_refit():
    """ModelHub.versions is rebuilt only when a model changed: it must still change then."""
    hub = ModelHub(HubConfig(snapshot_key=KEY))
    first = dict(hub.versions)
    assert hub.versions == first and hub.versions is hub.versions
    hub.churn.learner.n_learned += 1                      # as learning a label does
    assert hub.versions["churn_risk"] != first["churn_risk"]
    assert hub.versions["churn_risk"] == hub.churn.version
    hub.abandon.learner.n_learned += 1
    assert hub.versions["abandon_risk"] == hub.abandon.version != first["abandon_risk"]
    hub.population.refits += 1
    assert hub.versions["clv"] == f"bgnbd-gg/{hub.population.refits}" != first["clv"]
