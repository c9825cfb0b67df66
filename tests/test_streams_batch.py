"""Batched ingest on the embedded broker: a failed event in the middle of a batch.

The worker (``tests.faulty_worker``) runs the production topology with one change: events
whose id starts with ``boom-`` make the engine raise *after* it changed the state. Each
such event is a copy (new id) of a real event placed right after it, in a stream produced
before the worker starts (a backlog: the worker takes it in full batches), so that it
lands in the middle of a large batch, between other events of the same customer. Expected: exactly those events dead-lettered (stage
``processing``), and changes and final table equal to an offline replay of the stream
without them: the failure left nothing behind and lost nothing of the rest of its batch.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter

import orjson
import pytest
from tests.conftest import key_of, produce_raw, read_topic, simulated_lines, wait_committed
from tests.test_streams_pipeline import INPUT, check_against_replay, setup_env, summary

pytestmark = [
    pytest.mark.broker, pytest.mark.timeout(240),
    # the failing engine is patched into the worker's own process; a split worker's engines
    # run in its domain process (their mid-batch failure: tests/test_domain_process.py)
    pytest.mark.skipif(bool(os.environ.get("RETENTION_TEST_DOMAIN_PROCESS")),
                       reason="fault patched into the worker process, not its domain process"),
]


def _boom_copy(line: bytes, n: int) -> bytes:
    ev = orjson.loads(line)
    ev["event_id"] = f"boom-{n}"
    if "order_id" in ev:
        ev["order_id"] = f"boom-order-{n}"
    return orjson.dumps(ev)


def _with_booms(lines: list[bytes], keys: list[bytes], nth: int, start: int) -> tuple[
        list[tuple[bytes, bytes]], int]:
    """The stream with a boom copy after the ``nth`` event of each of ``keys``."""
    seen: Counter[bytes] = Counter()
    out: list[tuple[bytes, bytes]] = []
    n = start
    for line in lines:
        k = key_of(line)
        out.append((k, line))
        seen[k] += 1
        if k in keys and seen[k] == nth:
            out.append((k, _boom_copy(line, n)))
            n += 1
    return out, n - start


def test_a_failed_event_mid_batch_keeps_the_rest_of_the_batch(broker, workers, unique,
                                                               tmp_path):
    env, settings = setup_env(broker, unique, tmp_path)
    # batches fill up only while more than RETENTION_BATCH_MAX events wait on the broker
    # (else a batch is whatever has arrived, streams/batching.py): a cap below the backlog
    # produced here makes the worker take it in large batches
    env["RETENTION_BATCH_MAX"] = "200"
    lines = simulated_lines(customers=40, days=40, seed=17)
    half = len(lines) // 2
    first, second = lines[:half], lines[half:]
    busy = [k for k, _ in Counter(key_of(x) for x in first).most_common(3)]
    # first part: booms after the 3rd event of the busiest keys (same key before and after
    # in the batch: the key has unflushed changes when the event fails)
    records1, n1 = _with_booms(first, busy, nth=3, start=0)
    produce_raw(broker.bootstrap, settings.topic(INPUT), records1)
    w = workers("tests.faulty_worker", env, name="faulty")
    w.wait_ready(60)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])
    # second part, on a running worker: booms after the 1st event of keys whose state was
    # flushed by an earlier batch
    again = [k for k, _ in Counter(key_of(x) for x in second).most_common(6)
             if k in {key_of(x) for x in first}][:2]
    assert again
    records2, n2 = _with_booms(second, again, nth=1, start=n1)
    produce_raw(broker.bootstrap, settings.topic(INPUT), records2)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])

    # the failures happened inside batches, between events of their own key
    log = w.log()
    batches = [tuple(map(int, m.groups())) for m in re.finditer(
        r"BOOM-BATCH key=\S+ offset=\d+ size=(\d+) same_key_before=(\d+) "
        r"same_key_after=(\d+)", log)]
    assert len(batches) == n1 + n2, log[-3000:]
    assert any(size > 1 and before >= 1 and after >= 1 for size, before, after in batches), \
        batches
    # exactly the boom events dead-lettered, at stage processing
    dlq = [orjson.loads(r.value) for r in read_topic(broker.bootstrap,
                                                      settings.topic(INPUT + ".dlq"))]
    assert sorted(d["event_id"] for d in dlq) == sorted(f"boom-{i}" for i in range(n1 + n2))
    assert {d["stage"] for d in dlq} == {"processing"}
    assert all("injected engine failure" in d["error"] for d in dlq)
    stats = summary(env)["stats"]
    assert stats["dead_lettered"] == n1 + n2 and stats["errors"] == 0, stats
    assert stats["processed"] == len(lines), stats
    assert stats["batches"] < stats["messages"], stats
    # changes and final table: the replay of the stream without the failed events
    check_against_replay(broker, settings, lines)


def test_a_customer_reaches_the_changelog_at_most_once_per_flush_interval(broker, workers,
                                                                           unique, tmp_path):
    """Events of one customer trickle in one by one (each its own batch: natural batching);
    its state is written to the table, and so to the changelog, once per flush interval,
    not once per batch; the events are acked, and so committed, only after that; the final
    state and the changes are those of an offline replay."""
    from tests.eventkit import Shop
    from streams.topics import TABLE_CUSTOMERS, changelog_topic

    interval = 1.5
    env, settings = setup_env(broker, unique, tmp_path,
                              RETENTION_FLUSH_INTERVAL=str(interval))
    w = workers("streams", env, name="flush")
    w.wait_ready(60)
    shop = Shop()
    events = [shop.view("hot", day=0, minute=i) for i in range(24)]
    events.append(shop.order("hot", day=0, minute=25, total=40.0))
    lines = [orjson.dumps(e) for e in events]
    t0 = time.monotonic()
    for line in lines:                       # ~10 events/s: one event per batch
        produce_raw(broker.bootstrap, settings.topic(INPUT), [(b"hot", line)])
        time.sleep(0.1)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 60, [w])
    elapsed = time.monotonic() - t0
    stats = summary(env)["stats"]
    assert stats["processed"] == len(lines), stats
    assert stats["batches"] >= len(lines) // 2, stats          # events came one by one
    writes = [r for r in read_topic(broker.bootstrap,
                                    changelog_topic(settings.app_id, TABLE_CUSTOMERS))
              if r.key == b"hot"]
    # once per flush interval while events came, plus the flush of the last ones
    assert 1 <= len(writes) <= elapsed / interval + 2, (len(writes), elapsed, stats)
    assert len(writes) < stats["batches"] / 2, (len(writes), stats)
    check_against_replay(broker, settings, lines)
