"""Online models (models/scoring): delayed labels, prediction-time features, scores, snapshots."""

from __future__ import annotations

import json
import math
import pickle

import pytest

from models.clock import DAY, MINUTE, format_time
from models.config import EngineConfig
from models.engine import Engine
from models.features import customer_features
from models.profile import apply_order
from models.scoring import HubConfig, ModelHub, SnapshotError
from models.scoring.churn import CHURN_ENCODER, churn_values
from models.simulator import SimConfig, simulate
from models.state import CustomerState

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
