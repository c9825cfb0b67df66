"""The operator views against real workers on the embedded broker.

A module-scoped group of TWO workers (``python -m streams.web.worker``: the retention topology
with the operator views and a ModelHub) shares the 4 partitions; simulated events go in, and
every view is asked over HTTP: health, Prometheus metrics, customer lookups (every customer of
the other worker's partitions asked from this one: answered through ``@app.table_route``,
the path of faust issue 514), segments, models, flow, the bearer token. One group serves all
the tests of this module, so the suite pays for worker start-up once.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import key_of, produce_raw, simulated_lines, wait_committed, worker_env

from models.contract import validate_output
from models.partitioning import partition_for
from streams.broker import free_port
from streams.cli import create_all_topics
from streams.settings import Settings

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

TOKEN = "s3cret-operator-token"
INPUT = "shop.clickstream"


def http(port: int | str, path: str, token: str | None = TOKEN,
         timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(port: int | str, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    status, _, body = http(port, path, token)
    return status, json.loads(body)


class Group:
    """Two workers of one app on the session broker, with the events they processed."""

    def __init__(self, broker: Any, factory: Any, root: Path, unique: str) -> None:
        prefix = f"web{unique}."
        env = worker_env(broker.bootstrap, f"rsweb-{unique}", root / "a",
                         RETENTION_TOPIC_PREFIX=prefix, RETENTION_STORE="rocksdb://",
                         RETENTION_CLOCK_INTERVAL="0", RETENTION_WEB_TOKEN=TOKEN,
                         RETENTION_WEB_SAMPLE_INTERVAL="1",
                         RETENTION_MODELS="1", RETENTION_MODEL_KEY="web-test-model-key")
        self.settings = Settings.from_env(env)
        create_all_topics(self.settings)
        self.env_a = env
        self.env_b = dict(env, RETENTION_DATA_DIR=str(root / "b"),
                          RETENTION_WEB_PORT=str(free_port()))
        self.a = factory("streams.web.worker", self.env_a, name="a")
        self.a.wait_ready(90)
        self.b = factory("streams.web.worker", self.env_b, name="b")
        self.b.wait_ready(90)
        self.a.wait_ready(60, count=2)          # A rebalanced to share the partitions with B
        self.port_a = int(self.env_a["RETENTION_WEB_PORT"])
        self.port_b = int(self.env_b["RETENTION_WEB_PORT"])
        # lookups before any event: no worker has written the table's changelog yet, so
        # the producer may know nothing of its partitions (the routing must still answer)
        self.early = {(port, key): get_json(port, f"/customers/{key}")
                      for port in (self.port_a, self.port_b)
                      for key in ("early-1", "early-2", "early-3", "early-4")}
        good = simulated_lines(customers=120, days=150, seed=17)
        bad = [(b"c-bad", b'{"event_id": "x", "type": '),
               (b"c-bad", orjson.dumps({"event_id": "u1", "type": "teleported",
                                        "customer_id": "c-bad", "schema_version": "1",
                                        "occurred_at": "2025-01-01T00:00:00Z"}))]
        self.lines = good
        self.broker = broker
        records = [(key_of(x), x) for x in good] + bad
        self.t0 = time.monotonic()
        produce_raw(broker.bootstrap, self.settings.topic(INPUT), records)
        wait_committed(broker.bootstrap, self.settings.app_id, self.settings.topic(INPUT), 150,
                       [self.a, self.b])
        self.processing_seconds = time.monotonic() - self.t0
        from tests.conftest import replay

        self.changes, self.states = replay(good, 4)       # the offline truth
        self.keys = sorted(k for k, st in self.states.items() if not st.get("retired"))
        self.linked = sorted(k for k, st in self.states.items() if st.get("retired"))
        self.partitions_a = set(get_json(self.port_a, "/health/ready")[1]["partitions"])
        self.partitions_b = set(get_json(self.port_b, "/health/ready")[1]["partitions"])


@pytest.fixture(scope="module")
def group(broker: Any, tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Any:
    from tests.conftest import Worker

    root = tmp_path_factory.mktemp("webgroup")
    started: list[Worker] = []

    def factory(module: str, env: dict[str, str], name: str) -> Worker:
        w = Worker(module, env, root / f"{name}.log", name)
        started.append(w)
        return w.start()

    import uuid

    try:
        yield Group(broker, factory, root, uuid.uuid4().hex[:8])
    except Exception:
        for w in started:
            print(w.tail())
        raise
    finally:
        failed = request.session.testsfailed
        for w in started:
            w.stop()
            if failed:
                print(w.tail(80))


def test_health_needs_no_token_and_reports_ready(group: Group) -> None:
    for port in (group.port_a, group.port_b):
        status, doc = get_json(port, "/health/live", token=None)
        assert status == 200 and doc["status"] == "live"
        status, doc = get_json(port, "/health/ready", token=None)
        assert status == 200 and doc["status"] == "ready", doc
    assert group.partitions_a and group.partitions_b
    assert not group.partitions_a & group.partitions_b
    assert group.partitions_a | group.partitions_b == set(range(4))


@pytest.mark.parametrize("path", ["/metrics", "/customers/c000001", "/segments", "/models",
                                  "/flow", "/dashboard/series", "/retention/summary/"])
def test_everything_but_health_needs_the_token(group: Group, path: str) -> None:
    status, headers, _ = http(group.port_a, path, token=None)
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = http(group.port_a, path, token="wrong-token")
    assert status == 401
    status, _, _ = http(group.port_a, path)
    assert status in (200, 404)


def test_customer_lookup_is_answered_by_the_owner_from_either_worker(group: Group) -> None:
    """Every customer, asked from BOTH workers: the one that does not own the key forwards
    the request (``@app.table_route``) and the answer is the owner's, schema-valid."""
    owner_port = {p: group.port_a for p in group.partitions_a}
    owner_port.update({p: group.port_b for p in group.partitions_b})
    forwarded = 0
    for key in group.keys:
        p = partition_for(key, 4)
        docs = []
        for port in (group.port_a, group.port_b):
            status, doc = get_json(port, f"/customers/{key}")
            assert status == 200, (key, port, doc)
            validate_output("customer_view", doc)
            assert doc["key"] == key and doc["partition"] == p
            assert doc["served_by"].endswith(f":{owner_port[p]}"), (key, doc["served_by"])
            forwarded += port != owner_port[p]
            docs.append(doc)
        assert docs[0] == docs[1]
    assert forwarded == len(group.keys)
    # a customer with history: profile, scores with reasons, segments with entry times
    status, doc = get_json(group.port_a, f"/customers/{_busiest(group)}")
    assert doc["profile"]["orders"] >= 2
    assert doc["scores"]["churn_risk"] is not None and doc["scores"]["reasons"]["churn_risk"]
    assert doc["segments"] and all(s["since"] for s in doc["segments"])
    assert doc["recent_changes"] and doc["model_versions"]["churn_risk"]


def _busiest(group: Group) -> str:
    counts: dict[str, int] = {}
    for line in group.lines:
        d = orjson.loads(line)
        key = d.get("customer_id") or d.get("anonymous_id")
        if d["type"] == "order_completed" and key in group.states:
            counts[key] = counts.get(key, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k])


def test_linked_visitor_lookup_says_where_its_history_went(group: Group) -> None:
    assert group.linked, "the simulation links no visitor: raise anonymous_visitors"
    for key in group.linked:
        status, doc = get_json(group.port_b, f"/customers/{key}")
        assert status == 404 and doc["linked"] and "aliases" in doc["detail"], doc
        assert doc["linked_to"] == group.states[key]["linked_to"] in group.keys, doc
    aliases = {a for k in group.keys for a in get_json(group.port_a, f"/customers/{k}")[1]["aliases"]}
    assert set(group.linked) <= aliases


def test_unknown_customer_is_404_from_either_worker(group: Group) -> None:
    for (port, key), (status, doc) in group.early.items():
        assert status == 404 and doc["error"] == "not found", (port, key, status, doc)
    for port in (group.port_a, group.port_b):
        for key in ("nobody-1", "nobody-2", "nobody-3", "nobody-4"):
            status, doc = get_json(port, f"/customers/{key}")
            assert status == 404 and doc["error"] == "not found", doc


def test_segments_view_sums_to_the_replayed_membership(group: Group) -> None:
    expected: dict[str, int] = {}
    for st in group.states.values():
        for seg in st["segments"]:
            expected[seg] = expected.get(seg, 0) + 1
    status, doc = get_json(group.port_a, "/segments?scope=cluster")
    assert status == 200 and doc["scope"] == "cluster" and not doc["unreachable"], doc
    assert sorted(doc["partitions"]) == [0, 1, 2, 3]
    members = {r["name"]: r["members"] for r in doc["segments"]}
    assert {k: v for k, v in members.items() if v} == expected
    assert doc["definitions"]["definition_version"].startswith(doc["definitions"]["version"])
    row = next(r for r in doc["segments"] if r["name"] == "repeat")
    assert row["enter"] and row["exit"] and row["entered_total"] > 0
    assert "entries_per_minute" in row and "exits_per_minute" in row
    status, exact = get_json(group.port_b, "/segments?exact=1")
    local = {r["name"]: r["members"] for r in exact["segments"]}
    counted = {r["name"]: r["members"]
               for r in get_json(group.port_b, "/segments")[1]["segments"]}
    assert exact["members_from"] == "table scan" and local == counted


def test_models_view_reports_live_quality_and_versions(group: Group) -> None:
    for port, parts in ((group.port_a, group.partitions_a), (group.port_b, group.partitions_b)):
        status, doc = get_json(port, "/models")
        assert status == 200 and doc["scorers"] == len(parts), doc      # one hub per partition
        assert set(doc["partitions"]) == parts
        assert set(doc["models"]) >= {"churn_risk", "abandon_risk", "clv", "next_order"}
        ab = doc["models"]["abandon_risk"]
        per_part = [d["abandon_risk"]["metrics"] for d in doc["by_partition"].values()]
        assert ab["labels"] == sum(m["labels"] for m in per_part) > 0
        assert ab["log_loss"] is not None and 0 < ab["auc"] < 1 and "drifts" in ab
        assert set(ab["versions"]) == {str(p) for p in parts}


def test_flow_view_counts_every_event_and_dead_letter(group: Group) -> None:
    status, doc = get_json(group.port_b, "/flow?scope=cluster")
    assert status == 200 and not doc["unreachable"]
    by_type: dict[str, int] = {}
    for line in group.lines:
        t = orjson.loads(line)["type"]
        by_type[t] = by_type.get(t, 0) + 1
    assert doc["events_by_type"] == by_type
    assert doc["events_total"] == len(group.lines)
    assert doc["dead_letters"]["total"] == 2
    assert doc["dead_letters"]["by_stage"] == {"json": 1, "unknown_type": 1}
    assert [r["partition"] for r in doc["partitions"]] == [0, 1, 2, 3]
    for row in doc["partitions"]:
        assert row["lag_total"] == 0 and row["watermark"] and row["last_event_time"]
    assert doc["last_event_time"] == max(r["last_event_time"] for r in doc["partitions"])
    local = get_json(group.port_b, "/flow")[1]
    assert local["scope"] == "worker"
    assert {r["partition"] for r in local["partitions"]} == group.partitions_b


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_prometheus_metrics(group: Group) -> None:
    totals: dict[str, float] = {}
    for port in (group.port_a, group.port_b):
        status, headers, body = http(port, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        text = body.decode()
        for family, kind in (("retention_events_total", "counter"),
                             ("retention_dead_letters_total", "counter"),
                             ("retention_segment_changes_total", "counter"),
                             ("retention_processing_seconds", "histogram"),
                             ("retention_watermark_seconds", "gauge"),
                             ("retention_consumer_lag_records", "gauge"),
                             ("retention_model_log_loss", "gauge")):
            base = family.removesuffix("_total")
            assert (f"# TYPE {family} {kind}" in text
                    or f"# TYPE {base} {kind}" in text), family
        for name, v in _samples(text).items():
            totals[name] = totals.get(name, 0.0) + v
    assert totals['retention_events_total{type="order_completed"}'] == sum(
        1 for x in group.lines if b'"order_completed"' in x)
    assert sum(v for k, v in totals.items() if k.startswith("retention_events_total{")) == len(
        group.lines)
    assert totals['retention_dead_letters_total{stage="json",topic="%s"}'
                  % group.settings.topic(INPUT)] == 1
    assert totals["retention_processing_seconds_count"] >= len(group.lines)
    assert totals['retention_worker_ready'] == 2
    # the worker processes froze their start-up objects (streams/gc_tuning.py) and export
    # their process and collector figures
    for port in (group.port_a, group.port_b):
        samples = _samples(http(port, "/metrics")[2].decode())
        assert samples["retention_gc_frozen_objects"] > 10_000
        assert samples["process_resident_memory_bytes"] > 50e6
        assert 'python_gc_collections_total{generation="0"}' in samples
    assert any(k.startswith('retention_segment_changes_total{change="entered",segment="repeat"')
               for k in totals)


def test_dashboard_series_records_the_pictures(group: Group) -> None:
    deadline = time.monotonic() + 15
    while True:
        status, doc = get_json(group.port_a, "/dashboard/series")
        assert status == 200
        events = [v for v in doc["series"].get("events_per_s", []) if v]
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(doc["t"]) >= 2 and events, doc
    assert any(k.startswith("segment:") for k in doc["series"])
    assert any(k.startswith("log_loss:") for k in doc["series"])
    for name in ("dashboard.js", "dashboard.css"):
        status, headers, body = http(group.port_a, f"/dashboard/{name}", token=None)
        assert status == 200 and body
    status, headers, body = http(group.port_a, "/dashboard", token=None)
    assert status == 200 and b"<svg" not in body and b"http" not in body.split(b"<body>")[1]


def test_a_forwarded_lookup_is_never_forwarded_again(group: Group) -> None:
    """A lookup that already went through one routing hop is answered where it lands: two
    workers with stale assignments (mid-rebalance) cannot bounce it between them."""
    key = next(k for k in group.keys if partition_for(k, 4) in group.partitions_b)
    req = urllib.request.Request(f"http://127.0.0.1:{group.port_a}/customers/{key}")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("X-Retention-Forwarded-By", "http://127.0.0.1:1")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        doc = json.loads(exc.read())
        assert exc.code == 404 and "not assigned to this worker" in doc["detail"], doc


def test_counters_count_each_event_once_across_a_rebalance(group: Group) -> None:
    """Runs last (it stops worker B). A takes B's partitions over, restoring their engine
    counters from the partition meta (``Topology.meta``); A's process counters (``/flow``, ``/metrics``)
    must grow by exactly the events A processes afterwards, not by B's history."""
    before = get_json(group.port_a, "/flow")[1]["events_total"]
    group.b.stop()
    group.a.wait_ready(60, count=3)
    again = [x for x in group.lines if partition_for(key_of(x).decode(), 4) in group.partitions_b]
    extra = again[:200]
    produce_raw(group.broker.bootstrap, group.settings.topic(INPUT),
                [(key_of(x), x) for x in extra])
    wait_committed(group.broker.bootstrap, group.settings.app_id, group.settings.topic(INPUT),
                   90, [group.a])
    doc = get_json(group.port_a, "/flow")[1]
    assert sorted(r["partition"] for r in doc["partitions"]) == [0, 1, 2, 3]
    # with clock ticks off (these tests), a partition's engine and model hub are rebuilt by
    # its next message after a rebalance: here B's former partitions, which got new events
    models = get_json(group.port_a, "/models")[1]
    assert set(models["partitions"]) == group.partitions_b, models
    assert doc["events_total"] == before + len(extra), (before, len(extra), doc["events_total"])
    text = http(group.port_a, "/metrics")[2].decode()
    total = sum(v for k, v in _samples(text).items() if k.startswith("retention_events_total{"))
    assert total == before + len(extra)
    status, body = get_json(group.port_a, f"/customers/{key_of(extra[0]).decode()}")
    assert status == 200 and body["served_by"].endswith(f":{group.port_a}")
