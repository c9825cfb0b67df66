"""The faust-streaming 0.15.3 fixes (``streams/faust_fixes.py``) hold at EVERY recovery.

A worker restarted after a crash rebuilds its tables from the changelogs, so its fetcher is
already running when ``Recovery.on_recovery_completed`` runs (the restore started it). Two
races follow, both found by the SIGKILL fault test (``tests/test_faults.py``):

* upstream's order (resume the stream partitions, ``await perform_seek()``, then
  ``flow_control.resume()``, which empties the stream queues) lets that fetcher queue records
  during the await, and the resume throws them away: the fault test's lost page view. The
  ordering fix used to be applied only from a worker's *second* recovery on;
* Faust hands aiokafka its live set of active partitions; when the set empties (changelogs
  paused, streams not yet resumed) while a fetch waits, aiokafka returns every partition's
  records, Faust drops the stream records and aiokafka's positions move past them: restarted
  workers that never consumed some partitions.

The first tests drive the real (patched and upstream) ``Recovery`` methods with a stand-in
consumer whose "fetcher" queues a record per resumed stream partition every millisecond into
a real ``mode`` flow-controlled queue, and a ``perform_seek`` that takes 20 ms (the OffsetFetch
round trips). Nothing consumes the queue here, so every record the fetcher queued must still
be in it when the method returns. The last ones run aiokafka's own ``fetched_records`` under
the patched and upstream ``_fetch_records``.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from streams.faust_fixes import apply_faust_fixes

STREAM = {TP("shop.clickstream", p) for p in range(2)}
CHANGELOG = {TP("app-customers-changelog", p) for p in range(2)}


class _Log:
    def __init__(self) -> None:
        self._log = logging.getLogger("test_faust_fixes")

    def __getattr__(self, name: str) -> Any:
        return self._log.debug  # info, dev, warning: all the same here


class _Consumer:
    """Assignment, the set of partitions the fetcher hands on, and a slow seek."""

    def __init__(self) -> None:
        self.active: set[TP] = set()   # after a restore every partition is paused
        self.seeks = 0

    def assignment(self) -> set[TP]:
        return STREAM | CHANGELOG

    def resume_partitions(self, tps: Any) -> None:
        self.active |= set(tps)

    def resume_flow(self) -> None:
        pass

    async def perform_seek(self) -> None:
        await asyncio.sleep(0.02)
        self.seeks += 1


class _Signal:
    async def send(self) -> None:
        pass


class _Tables:
    def values(self) -> list:
        return []

    def on_actives_ready(self) -> None:
        pass

    def on_standbys_ready(self) -> None:
        pass


async def _noop() -> None:
    pass


def _recovery(consumer: _Consumer, flow: FlowControlEvent) -> Any:
    """A stand-in with what ``on_recovery_completed`` / ``_resume_streams`` use."""
    app = SimpleNamespace(
        consumer=consumer, consumer_generation_id=1, flow_control=flow,
        on_rebalance_complete=_Signal(), conf=SimpleNamespace(broker_request_timeout=5.0),
        _fetcher=SimpleNamespace(maybe_start=_noop),
        assignor=SimpleNamespace(assigned_standbys=lambda: set()),
        on_rebalance_end=lambda: None)

    async def _wait(coro: Any, timeout: float | None = None) -> Any:
        return await coro

    return SimpleNamespace(
        app=app, tables=_Tables(), completed=asyncio.Event(), log=_Log(),
        actives_for_table={}, standbys_for_table={}, _set_recovery_ended=lambda: None,
        _is_changelog_tp=lambda tp: tp in CHANGELOG, _wait=_wait)


async def _run(method: Any, recoveries: int) -> tuple[int, int]:
    """Run ``method`` ``recoveries`` times on one worker (``self``) with the fetcher running;
    return (records queued by the fetcher, records still in the queue)."""
    flow = FlowControlEvent(initially_suspended=False)   # the restore resumed the flow
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    consumer = _Consumer()
    rec = _recovery(consumer, flow)
    queued = 0
    stop = asyncio.Event()

    async def fetcher() -> None:
        nonlocal queued
        while not stop.is_set():
            for tp in sorted(consumer.active & STREAM):
                queue.put_nowait((tp, queued))
                queued += 1
            await asyncio.sleep(0.001)

    task = asyncio.ensure_future(fetcher())
    await asyncio.sleep(0.01)
    for _ in range(recoveries):
        consumer.active -= STREAM   # a rebalance pauses the stream partitions again
        await method(rec, 1)
        assert rec.completed.is_set() and consumer.active >= STREAM
    await asyncio.sleep(0.01)       # the fetcher goes on after the recovery
    stop.set()
    await task
    assert consumer.seeks == recoveries
    return queued, queue.qsize()


@pytest.fixture(autouse=True)
def _fixes() -> None:
    apply_faust_fixes()


@pytest.mark.parametrize("name", ["on_recovery_completed", "_resume_streams"])
@pytest.mark.parametrize("recoveries", [1, 2], ids=["first-recovery", "second-recovery"])
def test_fixed_recovery_clears_nothing_the_running_fetcher_queued(name: str,
                                                                  recoveries: int) -> None:
    queued, kept = asyncio.run(_run(getattr(Recovery, name), recoveries))
    assert queued > 0
    assert kept == queued, f"{queued - kept} of {queued} queued records thrown away"


@pytest.mark.parametrize("name", ["on_recovery_completed", "_resume_streams"])
def test_upstream_order_throws_away_what_the_running_fetcher_queued(name: str) -> None:
    """The race itself, with faust-streaming 0.15.3's own method: the records queued during
    the seek are gone (this is what the fix prevents; if it ever passes, upstream changed)."""
    upstream = getattr(Recovery, name).__wrapped_original__
    queued, kept = asyncio.run(_run(upstream, 1))
    assert queued > kept


# -- the fetch on a live, emptied set of active partitions ---------------------------------
class _PartitionRecords:
    """What aiokafka's ``FetchResult`` iterates: records and the offset after them."""

    def __init__(self, offsets: list[int]) -> None:
        self._it = iter(offsets)
        self.next_fetch_offset = offsets[0]

    def __iter__(self) -> _PartitionRecords:
        return self

    def __next__(self) -> int:
        offset = next(self._it)
        self.next_fetch_offset = offset + 1
        return offset


class _TPState:
    paused = False

    def __init__(self, position: int) -> None:
        self.position = position

    def consumed_to(self, offset: int) -> None:
        self.position = offset


def _aiokafka_consumer() -> tuple[Any, dict, asyncio.Future]:
    """A stand-in aiokafka consumer whose fetcher runs aiokafka's own ``fetched_records``."""
    import contextlib
    from types import MethodType

    from aiokafka.consumer.fetcher import Fetcher

    states: dict[TP, _TPState] = {}
    assignment = SimpleNamespace(active=True, state_value=states.__getitem__)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future = loop.create_future()
    waiters = iter([waiter])   # the first wait is woken by the test, later ones time out
    subs = SimpleNamespace(reassignment_in_progress=False, is_assigned=lambda tp: True,
                           fetch_context=contextlib.nullcontext)
    fetcher = SimpleNamespace(
        _subscriptions=subs, _records={}, _closed=False, _wait_consume_future=None,
        _notify=lambda fut: None,
        _create_fetch_waiter=lambda: next(waiters, None) or loop.create_future())
    fetcher.fetched_records = MethodType(Fetcher.fetched_records, fetcher)
    fetcher.states, fetcher.assignment = states, assignment
    return SimpleNamespace(_fetcher=fetcher, _closed=False), states, waiter


async def _fetch_after_the_set_empties(fetch_records: Any) -> tuple[dict, dict]:
    """A fetch starts while only a changelog partition is active and waits for data; the
    recovery ends (changelog paused, stream partitions not yet resumed: the live set is
    empty); then stream records arrive. Returns (records handed to Faust, stream positions)."""
    from aiokafka.consumer.fetcher import FetchResult

    consumer, states, waiter = _aiokafka_consumer()
    thread = SimpleNamespace(consumer=SimpleNamespace(
        flow_active=True, app=SimpleNamespace(consumer_generation_id=1)))
    changelog = TP("app-customers-changelog", 0)
    stream = TP("shop.clickstream", 0)
    active = {changelog}                                    # Faust's live set
    task = asyncio.ensure_future(fetch_records(thread, consumer, active, timeout=0.3))
    await asyncio.sleep(0.01)                              # the fetch is waiting
    active.discard(changelog)                               # Recovery: pause_partitions
    states[stream] = _TPState(position=10)
    fetcher = consumer._fetcher
    fetcher._records[stream] = FetchResult(stream, assignment=fetcher.assignment,
                                           partition_records=_PartitionRecords([10, 11, 12]),
                                           backoff=0)
    waiter.set_result(None)                                 # new data: the fetch wakes
    records = await task
    return records, {tp: s.position for tp, s in states.items()}


def test_fetch_uses_a_snapshot_of_the_active_partitions() -> None:
    """With the fix the stream records stay in aiokafka (position unchanged) until their
    partition is resumed; nothing is handed to Faust for a partition it would drop."""
    records, positions = asyncio.run(_fetch_after_the_set_empties(
        AIOKafkaConsumerThread._fetch_records))
    assert records == {}
    assert positions == {TP("shop.clickstream", 0): 10}


def test_upstream_fetch_on_the_emptied_live_set_returns_every_partition() -> None:
    """The bug, with faust-streaming 0.15.3's own method and aiokafka's own
    ``fetched_records``: an empty set means "all partitions", so the paused stream partition's
    records are returned (Faust's ``getmany`` then drops them) and aiokafka's position moves
    past them."""
    upstream = AIOKafkaConsumerThread._fetch_records.__wrapped_original__
    records, positions = asyncio.run(_fetch_after_the_set_empties(upstream))
    assert list(records) == [TP("shop.clickstream", 0)]
    assert positions == {TP("shop.clickstream", 0): 13}


def test_no_fetch_while_no_partition_is_active() -> None:
    async def run() -> dict:
        consumer, _, _ = _aiokafka_consumer()
        thread = SimpleNamespace(consumer=SimpleNamespace(
        flow_active=True, app=SimpleNamespace(consumer_generation_id=1)))
        consumer._fetcher.fetched_records = None  # must not be called
        return await AIOKafkaConsumerThread._fetch_records(thread, consumer, set(), timeout=5.0)

    assert asyncio.run(run()) == {}


async def _fetch_across_a_rebalance(fetch_records: Any) -> tuple[dict, dict]:
    """A fetch starts in generation 1 with the stream partition active and waits for data;
    a rebalance runs (Faust pauses every partition and the new generation 2 assigns the same
    partition again); then records of the new assignment arrive while Faust still has the
    partition paused (its recovery has not sought it to the committed offset yet). Returns
    (records handed to Faust, stream positions). Found with tests/test_faults.py: Faust's
    ``getmany`` drops such records (their partition is not active) after aiokafka moved its
    position past them, so the worker's agent then started 221-245 records past the
    committed offset."""
    from aiokafka.consumer.fetcher import FetchResult

    consumer, states, waiter = _aiokafka_consumer()
    app = SimpleNamespace(consumer_generation_id=1)
    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True, app=app))
    stream = TP("shop.clickstream", 0)
    active = {stream}
    task = asyncio.ensure_future(fetch_records(thread, consumer, active, timeout=0.3))
    await asyncio.sleep(0.01)                              # the fetch is waiting
    active.discard(stream)                                  # the rebalance: paused ...
    app.consumer_generation_id = 2                          # ... and assigned again
    states[stream] = _TPState(position=442)
    fetcher = consumer._fetcher
    fetcher._records[stream] = FetchResult(stream, assignment=fetcher.assignment,
                                           partition_records=_PartitionRecords([442, 443]),
                                           backoff=0)
    waiter.set_result(None)                                 # new data: the fetch wakes
    records = await task
    return records, {tp: s.position for tp, s in states.items()}


def test_a_fetch_does_not_outlive_a_rebalance() -> None:
    records, positions = asyncio.run(_fetch_across_a_rebalance(
        AIOKafkaConsumerThread._fetch_records))
    assert records == {}
    assert positions == {TP("shop.clickstream", 0): 442}


def test_upstream_fetch_hands_the_new_generations_records_to_the_old_fetch() -> None:
    upstream = AIOKafkaConsumerThread._fetch_records.__wrapped_original__
    records, positions = asyncio.run(_fetch_across_a_rebalance(upstream))
    assert list(records) == [TP("shop.clickstream", 0)]
    assert positions == {TP("shop.clickstream", 0): 444}


# -- a fetch that began while a stream partition was held back by a full buffer ------------
async def _fetch_while_a_buffer_is_full(fetch_records: Any) -> tuple[dict, float]:
    """The stream partition's queue is full (Faust's ``on_buffer_full``: the partition left
    the active set, its records wait in aiokafka) when a fetch begins on the other, empty
    partitions; then the agent drains the queue and ``on_buffer_drop`` puts the partition
    back. Nothing new arrives from the broker, so nothing wakes aiokafka's fetch waiter.
    Returns (records, seconds the fetch took). Found with the fast read loop
    (``streams/faust_speedups.py``): every full buffer cost a whole 1 s getmany timeout."""
    from aiokafka.consumer.fetcher import FetchResult

    consumer, states, _ = _aiokafka_consumer()
    stream = TP("shop.clickstream", 0)
    other = TP("shop.orders", 0)
    buffered = {stream}
    thread = SimpleNamespace(consumer=SimpleNamespace(
        flow_active=True, app=SimpleNamespace(consumer_generation_id=1),
        _buffered_partitions=buffered))
    states[stream] = _TPState(position=10)
    fetcher = consumer._fetcher
    fetcher._records[stream] = FetchResult(stream, assignment=fetcher.assignment,
                                           partition_records=_PartitionRecords([10, 11]),
                                           backoff=0)
    active = {other}                                        # Faust's live set
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    task = asyncio.ensure_future(fetch_records(thread, consumer, active, timeout=1.0))
    await asyncio.sleep(0.02)                               # the fetch is waiting
    buffered.discard(stream)                                # on_buffer_drop
    active.add(stream)
    records = await task
    return records, loop.time() - t0


def test_a_fetch_returns_when_a_full_buffer_drains() -> None:
    """The patched fetch returns (empty, as on a timeout) within milliseconds of the
    partition's return, and leaves its records in aiokafka for the next fetch."""
    records, took = asyncio.run(_fetch_while_a_buffer_is_full(
        AIOKafkaConsumerThread._fetch_records))
    assert records == {}
    assert took < 0.5, f"the fetch waited {took:.2f} s after the buffer drained"


def test_a_fetch_with_nothing_held_back_waits_for_data() -> None:
    """No partition held back: the wait is not cut short (no polling at the tail)."""
    async def run() -> tuple[dict, float]:
        consumer, _, _ = _aiokafka_consumer()
        thread = SimpleNamespace(consumer=SimpleNamespace(
            flow_active=True, app=SimpleNamespace(consumer_generation_id=1),
            _buffered_partitions=set()))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = await AIOKafkaConsumerThread._fetch_records(
            thread, consumer, {TP("shop.orders", 0)}, timeout=0.2)
        return got, loop.time() - t0

    got, took = asyncio.run(run())
    assert got == {} and took >= 0.19


def test_upstream_fetch_waits_out_its_timeout_after_a_full_buffer_drains() -> None:
    """faust-streaming 0.15.3's own method: the partition's return wakes nothing, the fetch
    takes its whole timeout."""
    upstream = AIOKafkaConsumerThread._fetch_records.__wrapped_original__
    records, took = asyncio.run(_fetch_while_a_buffer_is_full(upstream))
    assert took >= 0.9
