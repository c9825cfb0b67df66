"""The operator surface's parts without a broker: the customer document, the counters the
observer folds, the Prometheus text, the recorder, the group merges, auth and preflight."""

from __future__ import annotations

import io
import math
import socket
from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.contract import parse_event, validate_output
from models.engine import Engine
from models.scoring import HubConfig, ModelHub
from models.segments import load_catalog
from models.simulator import SimConfig, simulate
from models.state import CustomerState
from streams.web.customer import customer_view
from streams.web.observe import Observer
from streams.web.preflight import (Problem, check_broker, check_definitions, check_port, explain,
                                   preflight, report)
from streams.web.progress import StatusLine
from streams.web.prom import Metrics
from streams.web.recorder import Recorder
from streams.web.views import WebSurface, merge_flow, merge_segments


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine(scorer=ModelHub(HubConfig()))
    for e in simulate(SimConfig(n_customers=80, days=120, seed=5, anonymous_visitors=16)).events:
        eng.process(parse_event(orjson.dumps(e)))
    return eng


# --------------------------------------------------------------------------- customer document
def test_every_customer_document_matches_the_schema(engine: Engine) -> None:
    n = 0
    for key in list(engine.store):
        if engine.state_of(key) is None:       # a linked visitor's retired marker
            continue
        doc = customer_view(engine.state_of(key), engine.features_of(key, engine.clock.max_seen),
                            engine.catalog, as_of=engine.clock.max_seen, partition=0,
                            served_by="http://127.0.0.1:1", model_versions=engine.scorer.versions)
        validate_output("customer_view", doc)
        assert doc["key"] == key and doc["schema_version"] == "1"
        for seg in doc["segments"]:
            assert seg["segment"] in engine.state_of(key).segments and seg["since"].endswith("Z")
        n += 1
    assert n > 50


def test_customer_document_shows_the_open_cart_and_reasons() -> None:
    state = CustomerState(key="v9", anonymous=True, local_time=100.0,
                          session={"id": "s1", "started_at": 10.0, "last_at": 90.0, "events": 4,
                                   "page_views": 2, "product_views": 1, "searches": 0,
                                   "cart": {"p1": [2, 9.5], "p2": [1, 3.0]}, "cart_id": "k1",
                                   "cart_value": 22.0, "cart_items": 3, "checkout": False},
                          scores={"churn_risk": None, "abandon_risk": 0.7, "clv": float("nan"),
                                  "next_order_at": 86400.0,
                                  "methods": {"abandon_risk": "logreg"},
                                  "reasons": {"abandon_risk": [
                                      {"feature": "cart_value", "value": 22.0, "contribution": 0.4},
                                      {"feature": "gap", "value": None, "contribution": None}]},
                                  "versions": {"abandon_risk": "a/1"}},
                          recent_changes=[["1970-01-01T00:01:00Z", "cart_abandoner", "entered",
                                           "e1"],
                                          ["1970-01-01T00:01:30Z", "cart_abandoner", "exited",
                                           "e2"]])
    doc = customer_view(state, {"cart_value": 22.0, "weird": float("inf")}, load_catalog())
    validate_output("customer_view", doc)
    cart = doc["session"]["cart"]
    assert cart["item_count"] == 3 and cart["value"] == 22.0
    assert {i["product_id"]: i["quantity"] for i in cart["items"]} == {"p1": 2, "p2": 1}
    assert doc["scores"]["abandon_risk"] == 0.7 and doc["scores"]["clv"] is None
    assert doc["scores"]["next_order_at"] == "1970-01-02T00:00:00Z"
    assert doc["scores"]["method_abandon_risk"] == "logreg"
    reasons = doc["scores"]["reasons"]["abandon_risk"]
    assert reasons[0]["contribution"] == 0.4 and reasons[1]["informational"]
    assert doc["profile"]["weird"] is None
    assert [c["change"] for c in doc["recent_changes"]] == ["exited", "entered"]  # newest first


# --------------------------------------------------------------------------- observer
class FakeTopic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


def fake_topology(meta: dict[int, dict] | None = None) -> Any:
    return SimpleNamespace(
        runtimes={}, input_names=["shop.orders"], clock_name="retention.clock",
        dlq={"shop.orders": FakeTopic("shop.orders.dlq")}, meta=meta or {},
        catalog=load_catalog(), stats={"messages": 0}, customers={})


def runtime(counters: dict[str, int], scorer: Any = None) -> Any:
    engine = SimpleNamespace(counters=Counter(counters), scorer=scorer,
                             clock=SimpleNamespace(watermark=50.0, max_seen=350.0))
    return SimpleNamespace(processor=SimpleNamespace(engine=engine))


def test_observer_counts_only_what_this_process_processed() -> None:
    # partition 0 was processed elsewhere before: its restored counters are the baseline
    topo = fake_topology({0: {"counters": {"type:page_view": 100, "entered:vip": 7}}})
    obs = Observer(topo)
    obs.before_message(0)                         # first message of a new assignment
    rt = runtime({"type:page_view": 100, "entered:vip": 7})
    topo.runtimes[0] = rt
    rt.processor.engine.counters.update({"type:page_view": 3, "type:order_completed": 1,
                                         "entered:vip": 1, "late_events": 2})
    obs.poll()
    assert obs.events_by_type == {"page_view": 3, "order_completed": 1}
    assert obs.segment_changes == {("vip", "entered"): 1} and obs.other == {"late_events": 2}
    rt.processor.engine.counters.update({"type:page_view": 5, "exited:vip": 2})
    obs.poll()
    obs.poll()                                    # a second poll adds nothing
    assert obs.events_by_type["page_view"] == 8
    assert obs.segment_changes[("vip", "exited")] == 2
    assert obs.segment_sizes()["vip"] == 7 + 1 - 2
    # the partition is revoked, then assigned again: counting resumes from its new baseline
    del topo.runtimes[0]
    obs.poll()
    topo.meta[0] = {"counters": dict(rt.processor.engine.counters)}
    obs.before_message(0)
    rt2 = runtime(dict(rt.processor.engine.counters))
    topo.runtimes[0] = rt2
    rt2.processor.engine.counters["type:page_view"] += 1
    obs.poll()
    assert obs.events_by_type["page_view"] == 9


def test_observer_without_a_baseline_counts_from_first_sight() -> None:
    topo = fake_topology()
    obs = Observer(topo)
    topo.runtimes[1] = runtime({"type:search": 40})
    obs.poll()
    assert obs.events_by_type == {}
    topo.runtimes[1].processor.engine.counters["type:search"] += 2
    obs.poll()
    assert obs.events_by_type == {"search": 2}


def test_sensor_counts_dead_letters_by_stage_and_latency() -> None:
    topo = fake_topology()
    obs = Observer(topo)
    from streams.web.observe import FlowSensor

    sensor = FlowSensor(obs)
    msg = SimpleNamespace(headers=[("trace", b"x"), ("dlq.stage", b"schema")])
    sensor.on_send_initiated(None, "shop.orders.dlq", msg, 0, 0)
    sensor.on_send_initiated(None, "shop.orders.dlq", SimpleNamespace(headers=[]), 0, 0)
    sensor.on_send_initiated(None, "segments.changes", msg, 0, 0)     # not a dead letter
    assert obs.dead_letters == {("shop.orders", "schema"): 1, ("shop.orders", "unknown"): 1}
    from faust.types import TP

    tp = TP("shop.orders", 2)
    sensor.on_message_in(tp, 5, SimpleNamespace(timestamp=1_700_000_000_000.0))
    state = sensor.on_stream_event_in(tp, 5, None, None)
    sensor.on_stream_event_out(tp, 5, None, None, state)
    assert obs.partitions[2].messages == 1 and obs.latency_count == 1
    assert sensor.on_stream_event_in(TP("other", 0), 1, None, None) is None
    # the batched agent's acks (Stream.ack from take_events) come without the state
    sensor.on_stream_event_in(tp, 6, None, None)
    sensor.on_stream_event_out(tp, 6, None, None)
    assert obs.latency_count == 2 and not sensor._entered
    sensor.on_stream_event_out(tp, 7, None, None)                      # never entered
    assert obs.latency_count == 2


# --------------------------------------------------------------------------- prometheus
class FakeApp:
    conf = SimpleNamespace(canonical_url="http://127.0.0.1:6066")
    rebalancing = False

    class consumer:  # noqa: N801 - stands in for app.consumer
        _read_offset = {}
        _committed_offset = {}

        @staticmethod
        def assignment() -> set:
            from faust.types import TP

            return {TP("shop.orders", 0)}

        @staticmethod
        def highwater(tp: Any) -> int:
            return 12


def test_prometheus_text_follows_the_naming_conventions() -> None:
    topo = fake_topology()
    obs = Observer(topo)
    hub = SimpleNamespace(describe=lambda: {"versions": {"churn_risk": "c/1"},
                                            "churn_risk": {"metrics": {"auc": 0.8, "log_loss": 0.5,
                                                                       "labels": 10, "drifts": 0,
                                                                       "rolling_auc": None}}})
    topo.runtimes[0] = runtime({"type:page_view": 1}, scorer=hub)
    obs.poll()
    topo.runtimes[0].processor.engine.counters.update({"type:page_view": 4, "entered:vip": 1})
    obs.dead_letters[("shop.orders", "json")] += 3
    metrics = Metrics(obs, FakeApp(), lambda: True, lambda: {"app_version": "0.1.0"})
    obs.observe_latency(0.002)
    text = metrics.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["retention_events"].type == "counter"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("retention_events_total", (("type", "page_view"),))] == 4
    assert samples[("retention_dead_letters_total", (("stage", "json"),
                                                    ("topic", "shop.orders")))] == 3
    assert samples[("retention_segment_changes_total", (("change", "entered"),
                                                       ("segment", "vip")))] == 1
    assert samples[("retention_processing_seconds_count", ())] == 1
    assert samples[("retention_consumer_lag_records", (("partition", "0"),
                                                      ("topic", "shop.orders")))] == 12
    assert samples[("retention_watermark_seconds", (("partition", "0"),))] == 50.0
    assert samples[("retention_model_auc", (("model", "churn_risk"),))] == 0.8
    assert ("retention_model_rolling_auc", (("model", "churn_risk"),)) not in samples
    assert samples[("retention_worker_ready", ())] == 1
    assert samples[("retention_gc_frozen_objects", ())] >= 0
    # prometheus_client's own process and collector families, as in its default registry
    assert families["process_resident_memory_bytes"].type == "gauge"
    assert families["python_gc_collections"].type == "counter"
    for name in families:
        assert name.startswith(("retention_", "process_", "python_gc_")), name
        assert name == name.lower()


# --------------------------------------------------------------------------- surface: auth, sampling
def surface(token: str | None) -> WebSurface:
    app = FakeApp()
    app.tables = SimpleNamespace(recovery=SimpleNamespace(completed=SimpleNamespace(
        is_set=lambda: True)))
    return WebSurface(app, fake_topology(), SimpleNamespace(partitions=4, web_bind="127.0.0.1"),
                      token=token, sample_interval=1.0, capacity=10)


class FakeView:
    def bytes(self, body: bytes, **kw: Any) -> dict:
        return {"body": body, **kw}


@pytest.mark.parametrize(("header", "allowed"), [("Bearer t0k", True), ("bearer t0k", True),
                                                 ("Bearer t0k2", False), ("t0k", False),
                                                 ("", False)])
def test_bearer_token(header: str, allowed: bool) -> None:
    s = surface("t0k")
    req = SimpleNamespace(headers={"Authorization": header} if header else {})
    resp = s.denied(FakeView(), req)  # type: ignore[arg-type]
    assert (resp is None) == allowed
    if resp is not None:
        assert resp["status"] == 401 and "WWW-Authenticate" in resp["headers"]
    assert surface(None).denied(FakeView(), req) is None  # type: ignore[arg-type]


def test_sampling_records_rates_sizes_and_models() -> None:
    s = surface(None)
    topo = s.topology
    topo.runtimes[0] = runtime({"type:page_view": 0, "entered:vip": 5, "exited:vip": 1})
    s.sample(now=100.0)
    topo.runtimes[0].processor.engine.counters.update({"type:page_view": 30, "entered:vip": 2})
    v = s.sample(now=102.0)
    assert v["events_per_s"] == 15.0 and v["segment:vip"] == 6 and v["lag_records"] == 12
    assert s.change_rates()[("vip", "entered")] == pytest.approx(60.0)
    ok, reasons = s.readiness()
    assert ok, reasons


# --------------------------------------------------------------------------- recorder
def test_recorder_is_bounded_and_aligned() -> None:
    r = Recorder(capacity=5, interval=1.0)
    for i in range(12):
        r.record(float(i), {"a": i, **({"b": i * 2} if i % 2 else {}), "c": float("nan")})
    doc = r.export()
    assert doc["t"] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert doc["series"]["a"] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert doc["series"]["b"] == [14.0, None, 18.0, None, 22.0]
    assert doc["series"]["c"] == [None] * 5
    assert r.export(since=9.0)["t"] == [10.0, 11.0]
    assert r.rate("x", 0.0, 10) is None and r.rate("x", 1.0, 4) is None   # a reset: no rate
    assert r.rate("x", 3.0, 10) == 3.0
    orjson.dumps(doc)


# --------------------------------------------------------------------------- merges
def test_cluster_merges_add_disjoint_partitions() -> None:
    def seg(worker: str, parts: list[int], members: int) -> dict:
        return {"worker": worker, "partitions": parts, "members_by_partition": {
            str(p): {"vip": members} for p in parts},
            "segments": [{"name": "vip", "members": members * len(parts), "entered_total": 1,
                          "exited_total": 0, "entries_per_minute": 0.5, "exits_per_minute": 0.0}]}

    out = merge_segments(seg("a", [0, 1], 2), [seg("b", [2, 3], 3)], [])
    assert out["scope"] == "cluster" and out["partitions"] == [0, 1, 2, 3]
    assert out["segments"][0]["members"] == 10 and out["segments"][0]["entries_per_minute"] == 1.0

    def flow(worker: str, parts: list[int]) -> dict:
        return {"worker": worker, "partitions": [{"partition": p, "lag_total": 1} for p in parts],
                "events_by_type": {"search": 2}, "events_total": 2, "lag_total": len(parts),
                "last_event_time": f"2025-01-0{parts[0] + 1}T00:00:00Z",
                "dead_letters": {"total": 1, "by_stage": {"json": 1}, "by_topic": {}}}

    out = merge_flow(flow("a", [0]), [flow("b", [1, 2])], [{"worker": "c", "error": "x"}])
    assert [p["partition"] for p in out["partitions"]] == [0, 1, 2]
    assert out["events_by_type"] == {"search": 4} and out["dead_letters"]["by_stage"] == {"json": 2}
    assert out["last_event_time"] == "2025-01-02T00:00:00Z" and out["unreachable"]


# --------------------------------------------------------------------------- preflight, progress
def test_preflight_explains_what_to_do(tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = check_port("127.0.0.1", port)
        assert p is not None and "RETENTION_WEB_PORT" in p.fix
        settings = SimpleNamespace(bootstrap_list=[f"127.0.0.1:{_closed_port()}"],
                                   broker="127.0.0.1:1", web_enabled=True, web_bind="127.0.0.1",
                                   web_port=port, store="memory://", data_dir=str(tmp_path))
        problems = preflight(settings, topics=False)
    checks = {p.check for p in problems}
    assert checks == {"web", "broker"}, problems
    broker = next(p for p in problems if p.check == "broker")
    assert "cannot reach the Kafka broker" in broker.what and "RETENTION_BROKER" in broker.fix
    out = io.StringIO()
    assert report(problems, out) == 1 and "what to do:" in out.getvalue()
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"\n[segments.a]\nenter = "orders >="\nexit = "orders < 1"\n')
    p = check_definitions(bad)
    assert p is not None and "not an expression" in p.what and "models.whatif" in p.fix
    assert check_definitions() is None
    assert check_broker(settings) is not None
    assert "RETENTION_WEB_PORT" in (explain(OSError(98, "Address in use"), settings) or "")
    assert explain(ValueError("x")) is None
    assert str(Problem("x", "w", "f", fatal=False)).startswith("warning")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_line_on_a_terminal_rewrites_one_line() -> None:
    out = io.StringIO()
    bar = StatusLine("produce", total=10, out=out, tty=True, every=0)
    for _ in range(10):
        bar.advance()
    bar.done()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 11 and "[" + "#" * 24 + "]" in text
    assert not math.isnan(bar.count)


@pytest.mark.parametrize("module", ["streams.web.recorder", "streams.web.customer",
                                    "streams.web.preflight", "streams.web.progress"])
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_reserved_table_keys_are_not_customers() -> None:
    s = surface(None)
    for key in ("__faust_offset", "\x00retention-meta:0"):
        status, doc = s.customer(key)
        assert status == 404 and doc["detail"] == "not a customer key"
