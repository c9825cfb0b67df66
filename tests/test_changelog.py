"""A flush's table writes (``streams/changelog.py``): Faust's own bytes, and the RocksDB
store, the changelog and the persisted offset agreeing after a run.

The fault tests (``tests/test_faults.py``) rebuild the table from the changelog after
crashes; here the three places a flush writes are compared with each other, byte for byte.
"""

from __future__ import annotations

import re
import time

import orjson
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from streams.state import faust_json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30)


@hsettings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=8))
def test_faust_json_is_the_bytes_of_fausts_json_codec(value):
    """A value written by the writer is the bytes Faust's table would have written, so a
    restore, a standby or a reader through the table sees the same value."""
    from faust.serializers import codecs

    assert faust_json(value) == codecs.dumps("json", value)
    assert orjson.loads(faust_json(value)) == value


@hsettings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(-99, 99) | st.booleans() | st.none() | st.text(max_size=4),
                       JSON, max_size=6))
def test_faust_json_takes_fausts_options_for_keys_that_are_not_strings(value):
    """faust_json tries orjson without OPT_NON_STR_KEYS first (faster); a value with a key
    that is not a string must still come out as Faust's codec writes it."""
    from faust.serializers import codecs

    assert faust_json(value) == codecs.dumps("json", value)


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_store_changelog_and_persisted_offset_agree_after_a_run(broker, workers, unique,
                                                                 tmp_path):
    """After a worker ran a stream and stopped: every partition's RocksDB database holds
    exactly the last changelog record of each key (bytes equal, deletes included), and its
    persisted offset is the partition's last changelog offset, so a restart on the same disk
    has nothing of the changelog to read again. Fails if the writer skipped the database,
    wrote other bytes than it sent, or left the persisted offset behind."""
    from rocksdict import AccessType, Options, Rdict

    from streams.topics import TABLE_CUSTOMERS, changelog_topic
    from tests.conftest import key_of, produce_raw, read_topic, simulated_lines, wait_committed
    from tests.test_streams_pipeline import INPUT, setup_env, summary

    env, settings = setup_env(broker, unique, tmp_path, RETENTION_FLUSH_INTERVAL="0.3")
    w = workers("streams", env, name="w")
    w.wait_ready(60)
    lines = simulated_lines(customers=80, days=30)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])
    flushes = summary(env)["stats"]["flushes"]
    assert w.stop() == 0, w.tail()

    last: dict[int, dict[bytes, bytes | None]] = {}
    last_offset: dict[int, int] = {}
    for r in sorted(read_topic(broker.bootstrap,
                               changelog_topic(settings.app_id, TABLE_CUSTOMERS)),
                    key=lambda r: (r.partition, r.offset)):
        last.setdefault(r.partition, {})[r.key] = r.value
        last_offset[r.partition] = r.offset
    assert len(last) == settings.partitions, sorted(last)
    assert flushes > 1

    paths = {int(re.search(r"-(\d+)\.db$", p.name).group(1)): p
             for p in tmp_path.glob(f"w/**/{TABLE_CUSTOMERS}-*.db")}
    assert sorted(paths) == list(range(settings.partitions)), paths
    options = Options(raw_mode=True)
    for p, path in sorted(paths.items()):
        db = Rdict(str(path), options=options, access_type=AccessType.read_only())
        try:
            stored = {k: v for k, v in db.items() if not k.startswith(b"__faust")}
            persisted = db.get(b"__faust\x00offset__")
        finally:
            db.close()
        want = {k: v for k, v in last[p].items() if v is not None}
        assert set(stored) == set(want), (p, set(stored) ^ set(want))
        for key, value in want.items():
            assert stored[key] == value, (p, key)
        assert persisted is not None and int(persisted) == last_offset[p], (p, persisted,
                                                                            last_offset[p])


@pytest.mark.broker
@pytest.mark.timeout(300)
def test_an_undelivered_changelog_stops_the_worker_and_the_restart_loses_nothing(
        broker, workers, unique, tmp_path):
    """One changelog record of a flush is not delivered (``tests.unwritable_worker``): the
    worker stops with status 71 before acking that flush, its database untouched by it; the
    restarted worker (same disk) replays from the committed offsets, and the changes
    (deduplicated by id) and the table rebuilt from the changelog are those of an offline
    replay. Fails if the flush were acked anyway (its states would be missing), if the
    database were written before the delivery, or if the worker went on."""
    from streams.agents import EXIT_STATE_NOT_WRITTEN
    from tests.conftest import key_of, produce_raw, simulated_lines, wait_committed
    from tests.test_streams_pipeline import INPUT, check_against_replay, setup_env

    env, settings = setup_env(broker, unique, tmp_path, RETENTION_FLUSH_INTERVAL="0.2",
                              RETENTION_TEST_FAIL_FLUSH="6",
                              RETENTION_TEST_FAIL_MARKER=str(tmp_path / "failed-once"))
    lines = simulated_lines(customers=60, days=40, seed=11)
    half = len(lines) // 2
    w = workers("tests.unwritable_worker", env, name="first")
    w.wait_ready(60)
    for i in range(0, half, 50):             # a trickle: many flushes
        produce_raw(broker.bootstrap, settings.topic(INPUT),
                    [(key_of(x), x) for x in lines[i:min(i + 50, half)]])
        time.sleep(0.05)
    deadline = time.monotonic() + 90
    while w.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not w.alive(), w.tail()
    assert w.proc.returncode == EXIT_STATE_NOT_WRITTEN, (w.proc.returncode, w.tail())
    log = w.log()
    assert "FAILED-FLUSH" in log and "could not be written" in log, log[-3000:]
    w.stop()

    produce_raw(broker.bootstrap, settings.topic(INPUT),
                [(key_of(x), x) for x in lines[half:]])
    again = workers("tests.unwritable_worker", env, name="restarted")
    again.wait_ready(90)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [again])
    assert "FAILED-FLUSH" not in again.log()
    check_against_replay(broker, settings, lines)
