"""Deliberate fixes to faust-streaming 0.15.3, applied when the App is created.

Rebalance data-loss race (faust-streaming issue 596,
https://github.com/faust-streaming/faust/issues/596)
======================================================================================

When a worker that is *already running* goes through a rebalance,
``faust.tables.recovery.Recovery.on_recovery_completed`` (and ``_resume_streams`` on the
path without tables) does, in this order:

1. ``consumer.resume_partitions(assignment)``
2. ``await consumer.perform_seek()``   (an OffsetFetch round trip, tens of ms)
3. ``app.flow_control.resume()``       (mode-streaming 0.7.1: empties every flow-controlled
   queue)

During the ``await`` in step 2 the fetcher is running and the partitions are already
resumed, so records that aiokafka prefetched (Faust's pause only filters what it hands on)
are put into the stream queues -- and step 3 throws them away. They are never re-read:
the seek rewinds aiokafka to the committed offset, but the old ``getmany`` generator still
yields its pre-seek records and moves Faust's read offset to the end of that fetch, so the
re-fetched copies are dropped as "already read" (``DROPPED MESSAGE ROFF`` in the debug log).
Measured on the embedded broker: the number of lost events equalled the queue length at the
clear (27 to 251 per rebalance). Two workers in one group lose, on Apache Kafka too; so does a
single worker restarted with tables to restore (below). Only a worker with nothing to restore
is safe at its first recovery (its fetcher starts only after this code ran).

The fix: seek *first* (while the partitions are still paused, so nothing for them can be
queued), then ``resume_partitions``, ``completed.set()``, ``flow_control.resume()`` and
``consumer.resume_flow()`` one after another with no ``await`` in between, so that nothing
can be queued and then cleared. Everything else is unchanged from 0.15.3.

The fixed order is used at EVERY recovery, the first one after a start included. A worker
restarted after a crash has tables to restore, so its fetcher is already running when its
first ``on_recovery_completed`` runs (``Recovery._restart_recovery`` starts it to read the
changelogs): the same race. The fix used to be applied only from a worker's second recovery
on, and the SIGKILL fault test (``tests/test_faults.py``) lost events: with a restarted
worker's first fetch arriving during the seek, the resume cleared what was queued, e.g. one
record (``clickstream[2]@179``; the agent went from offset 178 to 180, and one visitor's state
missed that page view), or 59 records over four partitions (one partition's commit then stuck
at the start of its gap: the "restarted worker never consumes some partitions" symptom). A
record lost like this is not repaired by a later replay either: its customer's state already
holds a later offset, so the engine skips it as applied.

Stream records fetched while no partition is active (found with the fault test)
=================================================================================

Faust hands aiokafka its *live* set of active partitions for every fetch
(``AIOKafkaConsumerThread._fetch_records`` -> ``Fetcher.fetched_records(partitions)``), and
the fetch waits up to a second in the consumer thread. When a recovery ends, the changelog
partitions are paused before the stream partitions are resumed, so the set the pending fetch
holds becomes *empty*; aiokafka reads an empty set as "every partition"
(``if partitions and tp not in partitions``), returns the prefetched stream records too and
moves its positions past them, and Faust's ``getmany`` drops them (their partitions are not
active). Nothing reads them again unless a seek to the committed offset follows: with the
fixed order the seek comes *before* the resume, and a partition with no committed offset is
never seeked at all. Seen in the SIGKILL fault test as a restarted worker that never
consumed some partitions (aiokafka's position at the end of the partition, Faust's read
offset ``None``), the reason the fixed order had been kept off the first recovery.

The fix: each fetch gets a snapshot of the active partitions, and no fetch is made when the
snapshot is empty (the drain loop asks again; it sleeps when nothing is active).

A shorter fetch wait makes this far more frequent (measured below; our reading, not
measured: Tansu answers every few tens of ms instead of once per 1.5 s hold, so aiokafka much
more often has stream records in hand when it is asked with an emptied set).
With ``streams.app.short_fetch_wait_on_embedded_broker`` (25 ms) and only this fix turned
off, the two-worker rebalance test lost events in 2 of 5 runs: the whole tail of ONE
partition after the worker that took it over recovered (``probe.in[0]`` from offset 431,
1,980 records, taken at the joining worker's first recovery; ``probe.in[2]`` from 677, 1,665
records, taken over from the SIGTERMed worker); the worker never read that partition again
(in the first run not even after its next recovery, which opens the same window again).
With this fix: 0 of 13.

A fetch of the previous generation handing out the new one's records (found with the fault test)
==================================================================================================

With two workers, after an eager rebalance gave a running worker back the same partitions,
its agent's first record of a partition was 221 to 245 offsets past the committed one (2 of
44 instrumented runs of the two-worker fault test, 2 of 28 runs before; e.g. committed 442,
first record 663). The
records in between never reached Faust's read loop. Instrumented (every ``getmany`` batch,
every seek, every queue clear logged): none was yielded, none was cleared, and the first
batch after the seek started at 663. How: a fetch begun in the old generation, with the
partition in its snapshot, waits inside aiokafka's ``fetched_records``; that method waits
for the reassignment to finish and then drains what aiokafka has prefetched for the new
assignment (from the committed offset). Faust's ``getmany`` gets the records while its own
recovery still has the partition paused, drops them (the partition is not active) -- after
aiokafka has moved its position past them. The later seek to the committed offset does not
help when the drain comes after it; the agent then starts at the end of that fetch, and the
customer state written from there holds a source position past the lost records, so even a
later replay skips them as applied (26 page views of one customer, in the run analysed).

The fix: the patched ``_fetch_records`` waits for new records itself and drains aiokafka
only with ``timeout=0`` (no wait inside aiokafka), and only while no reassignment is in
progress, the flow is active and the generation is the one the fetch began in; otherwise it
returns nothing. Behind it, ``streams/continuity.py`` checks in the agent that the first record
of each input partition after an assignment is at the committed offset; when it is not
(whatever the cause), it asks the group for a new assignment (``request_rejoin`` below), and
Faust's recovery reads the partition again from the committed offset.

A fetch that began while a stream buffer was full (found profiling the decode agent)
====================================================================================

When a stream's queue is under high pressure, Faust's conductor calls
``Consumer.on_buffer_full(tp)``: the partition leaves the active set (its records stay in
aiokafka) until ``on_buffer_drop(tp)`` puts it back. A fetch that began in between asks only
for the other partitions; with nothing new on the broker for them, nothing wakes its wait, and
it waits out its whole timeout (1 s) although the agent has long drained the queue and
aiokafka holds the partition's next records. Measured with the fast read loop
(``streams/faust_speedups.py``, which fills a queue faster than the agent empties it): every
10,000 records, a 1.0 s getmany that returned nothing, about 4 s of a 6 s run. Upstream's own
method does the same (tested), its slower loop just rarely fills a queue.

The fix: while a partition that was held back when the fetch began is still held back, the
wait is cut into 5 ms steps; as soon as one is back (or gone), the fetch returns nothing, as a
timeout would, and Faust's next fetch includes it.

The regression tests are ``tests/test_faust_fixes.py`` (both fixes against 0.15.3's own
methods, no broker), ``tests/test_streams_rebalance.py`` (two worker processes, one is
SIGTERMed mid-stream, every event is counted) and ``tests/test_faults.py`` (SIGKILLs and
restarts, compared with an offline replay). Remove this module only when an upstream release
fixes both *and* those tests pass without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

__all__ = ["FIXED_VERSION", "apply_faust_fixes", "fixes_applied", "request_rejoin"]

log = logging.getLogger(__name__)

#: the faust-streaming version these patches were written against
FIXED_VERSION = "0.15.3"

_applied = False

#: seconds between checks, while a fetch waits, for a partition back from a full stream buffer
BUFFER_POLL = 0.005


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """``Recovery._resume_streams`` with the seek before the resume (issue 596)."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    stream_tps = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    if assignment:
        # FIX: seek while the partitions are still paused ...
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
    else:
        self.log.info("Resuming streams with empty assignment")
    # ... then resume everything with no await in between.
    if stream_tps:
        consumer.resume_partitions(stream_tps)
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    # finally make sure the fetcher is running.
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` with the seek before the resume (issue 596)."""
    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table],
                self.standbys_for_table[table],
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        # FIX: seek while the stream partitions are still paused ...
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again (after seek)")
            return
    # ... then resume everything with no await in between.
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.log.dev("Resume stream partitions")
    self.app.flow_control.resume()
    consumer.resume_flow()
    # finally make sure the fetcher is running.
    await cast(Any, self.app)._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _fetch_records(self: Any, consumer: Any, active_partitions: Any,
                         timeout: float | None = None, max_records: int | None = None) -> Any:
    """``AIOKafkaConsumerThread._fetch_records`` on a snapshot of the active partitions, no
    fetch at all when none is active (aiokafka would return every partition's records), and
    no fetch that outlives a rebalance: records are taken from aiokafka only while no
    reassignment is in progress, the flow is active and the generation is the one the fetch
    began in (the wait for new records is done here, between such checks)."""
    faust_consumer = self.consumer
    if not faust_consumer.flow_active:
        return {}
    partitions = None if active_partitions is None else frozenset(active_partitions)
    if partitions is not None and not partitions:
        return {}
    from aiokafka.errors import ConsumerStoppedError

    fetcher = consumer._fetcher
    subscriptions = fetcher._subscriptions
    app = faust_consumer.app
    generation = app.consumer_generation_id
    deadline = time.monotonic() + (timeout or 0.0)
    # partitions left out because their stream buffer is full: when one comes back, return
    # (as a timeout would) so that the next fetch takes it, instead of waiting out the whole
    # timeout on a snapshot without it (nothing else wakes this wait: aiokafka holds their
    # records already, so no new data arrives)
    buffered = getattr(faust_consumer, "_buffered_partitions", None)
    held_back = frozenset(buffered) if buffered else frozenset()
    while True:
        if consumer._closed or fetcher._closed:
            raise ConsumerStoppedError()
        if (subscriptions.reassignment_in_progress or not faust_consumer.flow_active
                or app.consumer_generation_id != generation):
            return {}
        with subscriptions.fetch_context():
            # timeout 0: drains what is buffered, without aiokafka's own waits (among them
            # the wait for a new assignment, after which it would hand out the new
            # generation's records to a fetch of the old one)
            drained = await fetcher.fetched_records(partitions, timeout=0,
                                                    max_records=max_records)
        if drained:
            return drained
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return {}
        if held_back:
            if not held_back <= buffered:     # one is back (or revoked): fetch again
                return {}
            remaining = min(remaining, BUFFER_POLL)
        waiter = fetcher._create_fetch_waiter()
        _, pending = await asyncio.wait([waiter], timeout=remaining)
        for fut in pending:
            fut.cancel()
        if waiter.done() and not waiter.cancelled():
            waiter.result()                   # authorization errors, as aiokafka does


def apply_faust_fixes(strict: bool = True) -> None:
    """Patch faust's ``Recovery`` and ``AIOKafkaConsumerThread`` (idempotent). Refuses other
    faust versions when ``strict``: the patched methods are copies of 0.15.3's and must be
    re-checked on an upgrade."""
    global _applied
    if _applied:
        return
    import faust
    from faust.tables.recovery import Recovery

    if faust.__version__ != FIXED_VERSION:
        msg = (f"streams.faust_fixes was written for faust-streaming {FIXED_VERSION}, found "
               f"{faust.__version__}: re-check faust issue 596 and tests/test_streams_rebalance.py")
        if strict:
            raise RuntimeError(msg)
        log.warning(msg)
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    for cls, name, fn in ((Recovery, "on_recovery_completed", _on_recovery_completed),
                          (Recovery, "_resume_streams", _resume_streams),
                          (AIOKafkaConsumerThread, "_fetch_records", _fetch_records)):
        original = getattr(cls, name)
        fn.__wrapped_original__ = original  # type: ignore[attr-defined]
        setattr(cls, name, fn)
    _applied = True


def fixes_applied() -> bool:
    return _applied


async def request_rejoin(consumer: Any) -> None:
    """Ask the consumer's group for a new assignment (an eager rebalance: every partition is
    revoked, assigned again and recovered by Faust from its committed offset, with its read
    offset, gaps and queues reset). Used by the start guard (``streams/continuity.py``).
    Enqueued on Faust's consumer thread, where the aiokafka consumer lives; does not wait.
    """
    thread = consumer._thread

    async def rejoin() -> None:
        thread._ensure_consumer()._coordinator.request_rejoin()

    await thread.cast_thread(rejoin)
