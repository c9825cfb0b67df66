"""The write-back cache (:class:`streams.state.TableStore`) under batching: one failed event
is rolled back key by key, and the unflushed changes of the other events of the batch stay.

No broker: the table is a dict (shares objects, like Faust's memory store) or a stand-in
for RocksDB (every read decodes a fresh copy). The broker version of the same guarantee is
tests/test_streams_batch.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from tests.eventkit import Shop

from models.engine import Engine
from streams.state import TableStore


class FreshTable:
    """Like Faust's RocksDB store: values are stored encoded, every read decodes a copy."""

    def __init__(self) -> None:
        self.data = SimpleNamespace(_dbs={0: None})
        self._d: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> Any:
        raw = self._d.get(key)
        return None if raw is None else orjson.loads(raw)

    def __setitem__(self, key: bytes, value: Any) -> None:
        self._d[key] = orjson.dumps(value)

    def __delitem__(self, key: bytes) -> None:
        del self._d[key]

    def __contains__(self, key: bytes) -> bool:
        return key in self._d

    def states(self) -> dict[str, Any]:
        return {k.decode(): orjson.loads(v) for k, v in self._d.items()}


def _states(table: Any) -> dict[str, Any]:
    if isinstance(table, FreshTable):
        return table.states()
    return {k.decode(): orjson.loads(orjson.dumps(v)) for k, v in table.items()}


def _run(table: Any, batches: list[list[tuple[dict, bool]]]) -> dict[str, Any]:
    """Apply batches of (event, fails) through an engine over a TableStore, as the agent
    does: begin, process, commit or (the event fails after the engine changed the state)
    rollback; one flush per batch."""
    store = TableStore(table)
    engine = Engine(store=store)
    for batch in batches:
        for event, fails in batch:
            store.begin()
            engine.process(event)
            if fails:
                store.rollback()
            else:
                store.commit()
        store.flush(engine.dirty_keys())
        engine.clear_dirty()
    return _states(table)


def _reference(batches: list[list[tuple[dict, bool]]]) -> dict[str, Any]:
    engine = Engine()
    for batch in batches:
        for event, fails in batch:
            if not fails:
                engine.process(event)
    return {k: orjson.loads(orjson.dumps(s.to_dict())) for k, s in engine.store.items()}


def _scenario() -> list[list[tuple[dict, bool]]]:
    s = Shop()
    first = [(s.view("a", 0), False), (s.order("b", 0, 40, minute=1), False),
             (s.add("a", 0, minute=2), False)]
    second = [
        (s.view("a", 1), False),                       # a: unflushed change in this batch
        (s.order("a", 1, 30, minute=1), True),         # fails after changing a: rolled back
        (s.order("b", 1, 25, minute=2), True),         # fails on b's first touch (flushed)
        (s.view("c", 1, minute=3), True),              # fails on a new key
        (s.add("a", 1, minute=4), False),              # a goes on from before the failure
        (s.view("c", 1, minute=5), False),
        (s.order("b", 1, 10, minute=6), False),
    ]
    third = [(s._env("erasure_requested", "b", 2, 0), False),
             (s.view("b", 2, minute=1), True),         # fails on a key erased in this batch
             (s.view("a", 2, minute=2), False)]
    return [first, second, third]


@pytest.mark.parametrize("table_kind", ["dict", "rocksdb-like"])
def test_a_failed_event_is_undone_without_losing_the_batch(table_kind: str) -> None:
    table: Any = {} if table_kind == "dict" else FreshTable()
    batches = _scenario()
    got = _run(table, batches)
    want = _reference(batches)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == want[key], key
    # the failures did change state before their rollback (otherwise this proves nothing)
    unrolled: Any = {} if table_kind == "dict" else FreshTable()
    store = TableStore(unrolled)
    engine = Engine(store=store)
    for batch in batches:
        for event, _fails in batch:
            engine.process(event)
        store.flush(engine.dirty_keys())
        engine.clear_dirty()
    assert _states(unrolled) != want


def test_rollback_with_nothing_touched_is_a_no_op() -> None:
    store = TableStore({})
    store.begin()
    assert store.rollback() == []
    store.begin()
    store.commit()
    assert store.rollback() == []


class RecordingTable(FreshTable):
    """Remembers the order of the writes (the order of the changelog records)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.writes.append(key.decode())
        super().__setitem__(key, value)


def test_a_linked_visitors_marker_is_written_after_its_customer() -> None:
    """A flush cut by a crash must never leave the visitor's marker on the broker without the
    customer that absorbed it (the visitor's history would be lost; the other way round the
    replay completes the link: tests/test_engine_scenarios.py), even when the visitor's own
    event comes first in the batch (the agent names the events' keys as ``last``, in order)."""
    shop = Shop()
    table = RecordingTable()
    store = TableStore(table)
    engine = Engine(store=store)
    engine.process(shop.add("v1", 0, anonymous=True), position=("t", 1))
    engine.process(shop.view("c1", 0, minute=2, anonymous_id="v1"), position=("t", 2))
    store.flush(engine.dirty_keys(), last=["v1", "c1"])
    engine.clear_dirty()
    assert table.writes == ["c1", "v1"] and table.get(b"v1")["retired"]
    # a later logged-out event of the visitor is c1's; a crash writes c1, not the marker
    later = shop.view("v1", 0, minute=3, anonymous=True)
    engine.process(later, position=("t", 3))
    store.flush(engine.dirty_keys(), last=["v1"])
    assert table.writes[-2:] == ["c1", "v1"]
    engine2 = Engine()
    c1 = engine.store["c1"].from_dict(table.get(b"c1"))
    c1.seen_ids = [i for i in c1.seen_ids if i != later["event_id"]]   # long gone from the ids
    engine2.store["c1"] = c1
    marker = engine.store["v1"].from_dict(table.get(b"v1"))
    marker.positions = {"t": 2}                                       # as before the crash
    engine2.store["v1"] = marker
    views = c1.page_views
    assert engine2.process(later, position=("t", 3)) == []           # skipped by c1's position
    assert engine2.state_of("c1").page_views == views


def test_the_due_time_index_is_read_from_rocksdb_without_loading_states(tmp_path) -> None:
    """A worker starts a partition's engine from ``partition_index``: the timers read from a
    real Faust RocksDB store (the table's own serializer) are the ones the engine would
    index after loading every state, and no state is decoded into the cache."""
    import faust

    from streams.state import META_PREFIX, partition_index

    engine = Engine()
    s = Shop()
    for day in range(3):
        for who in ("a", "b", "c", "d"):
            engine.process(s.view(who, day))
        engine.process(s.add("a", day, minute=1))
        engine.process(s.order("b", day, 30, minute=2))
    # what Engine.rebuild_index makes of the loaded states (the live heap also holds stale
    # entries, dropped lazily when they come due)
    expected = sorted((st.due_at, k) for k, st in engine.store.items() if st.due_at is not None)
    assert len(expected) >= 4, "the scenario must leave timers"
    reloaded = Engine()
    for k, st in engine.store.items():
        reloaded.store[k] = st
    reloaded.rebuild_index()
    assert sorted(reloaded._heap) == expected

    app = faust.App("index-test", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("customers", partitions=2, key_type=bytes, value_type=None)
    store = table.data
    db = store._db_for_partition(1)
    for key, state in engine.store.items():
        db[key.encode()] = store._encode_value(state.to_dict())
    db[META_PREFIX + b"1"] = store._encode_value(engine.export_meta())
    db[store.offset_key] = b"42"

    n_keys, timers = partition_index(table, 1, 2)
    assert n_keys == len(engine.store)
    assert sorted(timers) == expected
    assert partition_index(table, 0, 2) == (0, [])

    fresh = Engine(store=TableStore(FreshTable()))
    assert fresh.load_index(timers) == len(expected)
    assert sorted(fresh._heap) == expected and fresh._heap[0] == expected[0]


def _undo_records_hold(engine: Engine, events: list[dict]) -> tuple[int, int]:
    """Process ``events``; before each, take the undo record of its key's state, and after
    it check that the record restores the state as it was. Returns (records checked, events
    that replaced the scores)."""
    from models.contract import parse_event
    from streams.state import _restore, _snapshot

    checked = changed_scores = 0
    for event in events:
        event = parse_event(orjson.dumps(event))
        key = event.get("customer_id") or event.get("anonymous_id")
        state = engine.store.get(key)
        if state is not None:
            before_json = orjson.dumps(state.to_dict())
            before_scores = state.scores
            snap = _snapshot(state)
        engine.process(event)
        if state is None:
            continue
        back = _restore(snap)
        assert orjson.dumps(back.to_dict()) == before_json, event["type"]
        assert back is not state and type(back) is type(state)
        checked += 1
        changed_scores += state.scores is not before_scores
    return checked, changed_scores


def test_undo_snapshot_is_independent_of_what_the_next_event_does() -> None:
    """The undo record shares the state's immutable values and the containers the engine only
    replaces (``REPLACED_WHOLE``) and copies the others as JSON. Over simulator traffic with the models, and over a customer's
    directed history (a visitor linked, orders cancelled and refunded, reviews, a delivery
    issue), the record taken before each event must restore the state exactly as it was
    then, after the event changed the live state."""
    from models.scoring import ModelHub
    from models.simulator import SimConfig, simulate
    from models.state import REPLACED_WHOLE
    from streams.state import _COPIED, _restore, _snapshot
    from tests.eventkit import Shop

    assert "scores" in REPLACED_WHOLE and "scores" not in _COPIED
    assert {"session", "model_data", "recent_orders", "segments", "positions"} <= set(_COPIED)
    engine = Engine(scorer=ModelHub())
    sim = simulate(SimConfig(n_customers=60, days=60, seed=3, usd_share=0.0))
    checked, changed_scores = _undo_records_hold(engine, sim.events)
    assert checked > 1000 and changed_scores > 500
    states = list(engine.store.values())
    assert any(s.model_data for s in states) and any(s.session for s in states)
    state = next(s for s in states if s.segments)
    back = _restore(_snapshot(state))
    assert back == state
    back.segments.clear()
    assert state.segments                                # an independent copy

    shop = Shop()
    o1, o2 = shop.order("c1", day=3, total=80), shop.order("c1", day=9, total=120)
    directed = [shop.view("a1", day=0, anonymous=True), shop.add("a1", day=0, minute=2, anonymous=True),
                shop.view("c1", day=1, anonymous_id="a1"), o1, o2,
                shop.cancel("c1", day=10, order_id=o1["order_id"]),
                shop.refund("c1", day=11, order_id=o2["order_id"], amount=20.0),
                shop.review("c1", day=12, rating=1), shop.delivery_issue("c1", day=13),
                shop.review("c1", day=14, rating=5), shop.order("c1", day=40, total=60)]
    checked, _ = _undo_records_hold(Engine(scorer=ModelHub()), directed)
    assert checked >= len(directed) - 2
