"""The retention topology on the embedded broker, end to end.

Events go in with kafka-python, segment changes and dead letters are read back with a plain
kafka-python consumer, the final table is read from its changelog topic, and everything is
compared with an offline replay of the same events through the engine
(``models.replay.Replay``, split over the partitions like Kafka). All events go to ONE input
topic so that each partition's order is the same in both. Clock ticks are off (they depend
on wall time).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from tests.conftest import (comparable, key_of, produce_raw, read_topic, replay, simulated_lines,
                      table_from_changelog, wait_committed, worker_env)

from streams.cli import create_all_topics
from streams.settings import Settings

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

INPUT = "shop.clickstream"


def setup_env(broker, unique: str, tmp_path: Path, name: str = "w", **extra: str):
    prefix = f"t{unique}."
    app_id = f"rs-{unique}"
    env = worker_env(broker.bootstrap, app_id, tmp_path / name, RETENTION_TOPIC_PREFIX=prefix,
                     RETENTION_CLOCK_INTERVAL="0", **extra)
    settings = Settings.from_env(env)
    create_all_topics(settings)
    return env, settings


def summary(env: dict[str, str]) -> dict:
    url = f"http://127.0.0.1:{env['RETENTION_WEB_PORT']}/retention/summary/"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def summary_after(env: dict[str, str], messages: int, timeout: float = 60.0) -> dict:
    """The worker's summary once it has taken ``messages`` messages (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        s = summary(env)
        if s["stats"]["messages"] >= messages or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def check_against_replay(broker, settings: Settings, lines: list[bytes]) -> tuple[int, int]:
    expected_changes, expected_states = replay(lines, settings.partitions, settings.models)
    got = [orjson.loads(r.value) for r in read_topic(broker.bootstrap,
                                                      settings.topic("segments.changes"))]
    by_id = {c["event_id"]: c for c in got}
    want = {c["event_id"]: c for c in expected_changes}
    def show(ids: set[str], src: dict[str, dict]) -> str:
        return "; ".join(f"{src[i]['customer_id']} {src[i]['segment']} {src[i]['change']} "
                         f"{src[i]['trigger']} at {src[i]['at']} cause {src[i]['cause_event_id']}"
                         for i in sorted(ids)[:8])

    missing, unexpected = set(want) - set(by_id), set(by_id) - set(want)
    assert not missing and not unexpected, (
        f"{len(missing)} changes missing: {show(missing, want)}\n"
        f"{len(unexpected)} unexpected: {show(unexpected, by_id)}")
    for eid, c in want.items():
        assert by_id[eid] == c
    table = table_from_changelog(broker.bootstrap, f"{settings.app_id}-customers-changelog")
    assert set(table) == set(expected_states)
    for key, state in expected_states.items():
        assert comparable(table[key]) == comparable(state), key
    # per-segment topics hold exactly the changes of their segment
    for seg in {c["segment"] for c in expected_changes if c.get("segment")}:
        ids = {orjson.loads(r.value)["event_id"]
               for r in read_topic(broker.bootstrap, settings.topic(f"segments.{seg}"))}
        assert ids == {e for e, c in want.items() if c["segment"] == seg}, seg
    return len(got), len(by_id)


def test_events_become_the_replayed_changes_and_state(broker, workers, unique, tmp_path):
    """With the online models on: scores and model versions are part of the facts compared
    (one hub per partition learns in partition order, as the offline replay does)."""
    env, settings = setup_env(broker, unique, tmp_path, RETENTION_MODELS="1")
    w = workers("streams", env, name="worker")
    ready = w.wait_ready(60)
    lines = simulated_lines(customers=80, days=90, seed=11)
    t0 = time.monotonic()
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])
    dt = time.monotonic() - t0
    n_changes, _ = check_against_replay(broker, settings, lines)
    stats = summary(env)["stats"]
    assert stats["processed"] == len(lines) and stats["dead_lettered"] == 0, stats
    changes = [orjson.loads(r.value) for r in read_topic(broker.bootstrap,
                                                          settings.topic("segments.changes"))]
    assert all(c["model_versions"] for c in changes)
    assert any(c["scores"]["churn_risk"] is not None for c in changes)
    print(f"worker ready in {ready:.1f}s; {len(lines)} events -> {n_changes} changes in "
          f"{dt:.1f}s ({len(lines) / dt:.0f} events/s end to end)")


BAD = {
    "json": (b"c-bad", b'{"event_id": "x", "type": '),
    "utf8": (b"c-bad", b'{"event_id": "\xff\xfe"}'),
    "schema": (b"c-bad", orjson.dumps({"event_id": "s1", "type": "order_completed",
                                       "customer_id": "c-bad", "schema_version": "1",
                                       "occurred_at": "2025-01-01T00:00:00Z"})),
    "unknown_type": (b"c-bad", orjson.dumps({"event_id": "u1", "type": "teleported",
                                             "customer_id": "c-bad", "schema_version": "1",
                                             "occurred_at": "2025-01-01T00:00:00Z"})),
    "size": (b"c-bad", b'{"pad": "' + b"x" * (70 * 1024) + b'"}'),
    # valid, but claims to happen decades after the broker received it: refused, not applied
    "processing": (b"c-future", orjson.dumps({"event_id": "f1", "type": "page_view",
                                              "customer_id": "c-future", "schema_version": "1",
                                              "occurred_at": "2099-01-01T00:00:00Z"})),
}


def test_bad_messages_are_dead_lettered_and_the_rest_processed(broker, workers, unique,
                                                                tmp_path):
    env, settings = setup_env(broker, unique, tmp_path)
    w = workers("streams", env, name="worker")
    w.wait_ready(60)
    good = simulated_lines(customers=30, days=30, seed=5)
    missing_key = good[0]                       # a valid event sent without a key
    wrong_key = good[1]                         # a valid event under another customer's key
    records: list[tuple[bytes | None, bytes]] = []
    headers: list[list[tuple[str, bytes]]] = []
    expected_stage: dict[int, str] = {}
    bad = list(BAD.items()) + [("key", (None, missing_key)), ("key", (b"c-bad", wrong_key))]
    step = max(1, len(good) // (len(bad) + 1))
    for i, line in enumerate(good[2:]):
        if i % step == 0 and bad:
            stage, (k, v) = bad.pop(0)
            expected_stage[len(records)] = stage
            records.append((k, v))
            headers.append([("trace", b"t-%d" % i)])
        records.append((key_of(line), line))
        headers.append([])
    while bad:
        stage, (k, v) = bad.pop(0)
        expected_stage[len(records)] = stage
        records.append((k, v))
        headers.append([("trace", b"tail")])
    sent = produce_raw(broker.bootstrap, settings.topic(INPUT), records, headers)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])

    dlq = read_topic(broker.bootstrap, settings.topic(INPUT + ".dlq"))
    by_source = {}
    for r in dlq:
        h = dict(r.headers)
        src = (int(h["dlq.source_partition"]), int(h["dlq.source_offset"]))
        by_source[src] = r
    bad_positions = {sent[i]: stage for i, stage in expected_stage.items()}
    assert set(by_source) == set(bad_positions)
    for i, stage in expected_stage.items():
        r = by_source[sent[i]]
        h = dict(r.headers)
        body = orjson.loads(r.value)
        from models.contract import validate_output

        validate_output("dead_letter", body)
        assert body["stage"] == stage == h["dlq.stage"].decode(), (stage, body)
        assert h["dlq.source_topic"].decode() == settings.topic(INPUT)
        assert h["dlq.app_version"] and h["dlq.schema_version"] and h["dlq.error"]
        assert h["trace"] == headers[i][0][1]            # original headers kept
        assert r.key == records[i][0]                    # original key kept
        if stage == "processing":
            assert "ahead of the time it was received" in body["error"], body
        import base64

        original = records[i][1]
        assert body["value_size"] == len(original)
        assert base64.b64decode(body["value_b64"]) == original[:settings.max_message_bytes]
    # input = processed + dead-lettered, and the processed ones are the replay of the good
    stats = summary(env)["stats"]
    assert stats["processed"] + stats["dead_lettered"] == len(records), stats
    assert stats["dead_lettered"] == len(expected_stage) and stats["errors"] == 0
    check_against_replay(broker, settings, good[2:])


def test_sigkill_mid_stream_then_restart_equals_uninterrupted(broker, workers, unique,
                                                              tmp_path):
    # the input is a backlog produced before the worker starts, and read in small batches, so
    # that the worker is surely killed mid-stream: produced while it runs, a worker with the
    # short fetch wait keeps up with the producer and is done when the producer returns
    env, settings = setup_env(broker, unique, tmp_path, RETENTION_STORE="rocksdb://",
                              RETENTION_BATCH_MAX="50")
    lines = simulated_lines(customers=300, days=120, seed=21)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    w1 = workers("streams", env, name="first")
    w1.wait_ready(60)
    # kill once a good part (not all) is processed
    done = summary_after(env, len(lines) // 3)["stats"]["messages"]
    assert done < len(lines), "worker finished before the kill: raise the event count"
    w1.kill(signal.SIGKILL)
    w1.proc.wait(10)
    w2 = workers("streams", env, name="restarted")  # same data dir: RocksDB + changelog
    w2.wait_ready(90)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w2])
    n_records, n_unique = check_against_replay(broker, settings, lines)
    print(f"killed after {done}/{len(lines)} messages; {n_records} change records, "
          f"{n_unique} unique")
    assert summary(env)["stats"]["dead_lettered"] == 0


def test_two_workers_reach_the_state_of_one(broker, workers, unique, tmp_path):
    env_a, settings = setup_env(broker, unique, tmp_path, name="a")
    env_b = dict(env_a)
    env_b["RETENTION_DATA_DIR"] = str(tmp_path / "b")
    from streams.broker import free_port

    env_b["RETENTION_WEB_PORT"] = str(free_port())
    a = workers("streams", env_a, name="a")
    a.wait_ready(60)
    b = workers("streams", env_b, name="b")
    b.wait_ready(60)
    a.wait_ready(30, count=2)
    parts_a = set(summary(env_a)["partitions"])
    lines = simulated_lines(customers=120, days=90, seed=8)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [a, b])
    sa, sb = summary(env_a), summary(env_b)
    assert set(sa["partitions"]) and set(sb["partitions"]), (sa, sb)
    assert not set(sa["partitions"]) & set(sb["partitions"])
    # what the group assigned: split between the two, every partition once, and each worker's
    # engines only for its own
    assert sorted(sa["assigned"] + sb["assigned"]) == list(range(settings.partitions)), (sa, sb)
    assert set(sa["partitions"]) <= set(sa["assigned"])
    assert set(sb["partitions"]) <= set(sb["assigned"])
    assert sa["stats"]["processed"] + sb["stats"]["processed"] == len(lines)
    check_against_replay(broker, settings, lines)
    del parts_a
