"""Topics, tables and the ingest agent of the retention topology.

One agent reads the three input topics and the clock topic (co-partitioned, so partition
*p* of all four belongs to the same customers and the same engine), with concurrency 1, in
batches: :func:`streams.batching.take_ready` (natural batching: whatever has arrived, at most
``RETENTION_BATCH_MAX`` events; ``RETENTION_BATCH_WITHIN`` bounds the wait).

Per event of a batch, in stream order: the partition's :class:`~streams.processor.
PartitionProcessor` turns the raw bytes into segment changes or a dead letter (a clock tick
moves the partition's event time), and what comes out is handed to a producer without
waiting (changes to the batching output producer, :mod:`streams.outputs`; dead letters to
Faust's). State changes stay in the partition's write-back cache (:class:`~streams.state.
TableStore`); a dead-lettered event's changes are rolled back there, key by key, without
touching those of the other events of the batch.

The state is flushed at most once per ``RETENTION_FLUSH_INTERVAL`` (and at once when Faust
rebalances or stops, since it then waits for every event taken to be acked), covering all
the batches since the previous flush (:meth:`Topology.flush`): every send is awaited; then,
per partition, each changed customer is written to the table once and the partition meta
after them, with that partition's last event as Faust's current event (Faust's RocksDB
store and the changelog take the partition from it). Only then are the events acked, so
only then can Faust commit their offsets. Faust flushes its producer before it commits
offsets (``faust/transport/consumer.py``, ``Consumer._commit_offsets``: ``await
self.app.producer.flush()`` before ``self._commit(...)``, reached from ``commit`` ->
``force_commit`` -> ``_commit_tps``; the table writes are queued on the same producer by
``Table.send_changelog`` -> ``changelog_topic.send_soon``), so a committed offset always
has its state and outputs on the broker (at-least-once; replays are skipped
exactly by the per-customer source positions in the state).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.types import TP

from models.partitioning import partition_for
from streams import topics as T
from streams.batching import take_ready
from streams.changelog import PendingWrites, TableWriter, uses_rocksdb
from streams.continuity import StartGuard
from streams.faust_fixes import request_rejoin
from streams.gc_tuning import freeze_startup
from streams.outputs import create_output_producer
from streams.processor import (Message, PartitionProcessor, change_records, dead_letter,
                               open_processor, restore_hub)
from streams.settings import APP_VERSION, Settings
from streams.state import (PartitionMeta, TableStore, faust_json, meta_key, partition_index,
                           partition_keys)

__all__ = ["EXIT_STATE_NOT_WRITTEN", "Topology", "message_of", "register", "stop_worker"]

#: the worker's exit status when the states of a flush could not be written
EXIT_STATE_NOT_WRITTEN = 71


def stop_worker(status: int, reason: str, exc: BaseException | None = None) -> None:
    """End this worker at once, with nothing more acked or committed (a failure it cannot
    go on from: the group replays from the committed offsets)."""
    log.critical(reason, exc_info=exc)
    logging.shutdown()
    os._exit(status)

log = logging.getLogger(__name__)

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
       "value_serializer": "raw"}


def message_of(msg: Any) -> Message:
    """A Faust message as the processor takes it (headers as bytes, no timestamp for 0)."""
    headers = msg.headers
    return Message(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                   tuple((k, bytes(v) if v is not None else b"") for k, v in headers)
                   if headers else (), msg.timestamp if msg.timestamp else None)


@dataclass
class Runtime:
    """Everything this worker holds for one assigned partition."""

    partition: int
    processor: PartitionProcessor
    store: TableStore
    since_meta: int = 0
    last_meta: float = field(default_factory=time.monotonic)
    last_snapshot: float = field(default_factory=time.monotonic)
    positions: dict[str, int] = field(default_factory=dict)   # last offset read per topic


@dataclass
class _Touched:
    """A partition seen since the last flush."""

    rt: Runtime
    event: Any                                   # its last Faust event since the last flush
    keys: dict[str, None] = field(default_factory=dict)   # event keys, by last event


class Topology:
    """The registered topics, tables and per-partition runtimes of one App."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        from models.engine import Engine
        from models.segments import load_catalog

        self.app = app
        self.settings = settings
        self.catalog = load_catalog()
        self.engine_config = settings.engine_config()
        self._engine_cls = Engine
        p = settings.partitions
        name = settings.topic
        self.input_names = [name(t) for t in T.INPUT_TOPICS]
        self._input_set = frozenset(self.input_names)
        self.clock_name = name(T.CLOCK_TOPIC)
        self.source = app.topic(*self.input_names, self.clock_name, partitions=p, **RAW)
        self.clock = app.topic(self.clock_name, partitions=p, **RAW)
        self.dlq = {name(t): app.topic(name(T.dlq_topic(t)), partitions=p, **RAW)
                    for t in T.INPUT_TOPICS}
        self.changes = app.topic(name(T.SEGMENT_CHANGES), partitions=p, **RAW)
        self.segment_topics = {seg: app.topic(name(T.segment_topic(seg)), partitions=p, **RAW)
                               for seg in self.catalog.segments}
        # changes and their per-segment copies go through the output producer (batched
        # even on the embedded broker, see streams/outputs.py); dead letters through
        # Faust's topics (the web sensor counts them on send)
        self.changes_name = self.changes.get_topic_name()
        self.segment_topic_names = {seg: t.get_topic_name()
                                    for seg, t in self.segment_topics.items()}
        self.outputs = create_output_producer(app)
        self.customers = app.Table(T.TABLE_CUSTOMERS, partitions=p, key_type=bytes,
                                   value_type=None)
        # the partition's engine meta (clock, counters, store metrics) lives in the customers
        # table under a reserved key, written last in every flush: one ordered changelog
        # partition then holds states and clock, so a restore never pairs a clock with states
        # from another point of the stream
        self.meta = PartitionMeta(self.customers)
        # with RocksDB, a flush's writes go to the store and changelog in one batch per
        # partition (streams/changelog.py); the memory store takes them one by one
        self.writer = (TableWriter(self.customers, app) if uses_rocksdb(settings.store)
                       else None)
        self.models = app.Table(T.TABLE_MODELS, partitions=p, key_type=bytes, value_type=None)
        self._snapshot_key = settings.snapshot_key() if settings.models else b""
        self.runtimes: dict[int, Runtime] = {}
        self.stats: dict[str, int] = {"messages": 0, "processed": 0, "dead_lettered": 0,
                                      "skipped": 0, "changes": 0, "ticks": 0, "errors": 0,
                                      "batches": 0, "flushes": 0, "table_writes": 0}
        # what the batches since the last flush left to finish: deliveries to await,
        # partitions whose changed customers are to be written, events to ack (in order)
        self._sends: list[tuple[Any, Any]] = []
        self._touched: dict[int, _Touched] = {}
        self._unacked: list[Any] = []
        self._last_flush = time.monotonic()
        # the first record of each input partition after an assignment must be at the
        # committed offset (streams/continuity.py: records skipped after a rebalance)
        self.guard = StartGuard()
        self.ack: Any = None            # ``stream.ack`` of the ingest agent (set there)
        self._inputs_of_generation: tuple[int, tuple[TP, ...]] | None = None
        #: ``gc.freeze()`` what is alive at the first batch (streams/gc_tuning.py): set by
        #: :meth:`run_as_worker_process`; off in-process (tests, tools)
        self.freeze_gc_at_first_batch = False


    def run_as_worker_process(self) -> None:
        """This process is a worker (``python -m streams worker``): its garbage collector is
        tuned (unless ``gc_thresholds`` is off), so it freezes what is alive at its first
        batch."""
        self.freeze_gc_at_first_batch = self.settings.gc_thresholds is not None

    # -- runtimes --------------------------------------------------------------------
    def runtime(self, partition: int, first: tuple[str, int] | None = None) -> Runtime:
        """The partition's runtime, built (from the restored tables) on first use after an
        assignment. Must run inside the agent (table reads use the current event)."""
        rt = self.runtimes.get(partition)
        if rt is not None:
            return rt
        n = self.settings.partitions
        store = TableStore(PendingWrites(self.customers) if self.writer else self.customers,
                           keys=lambda: partition_keys(self.customers, partition, n),
                           owns=lambda key: partition_for(key, n) == partition)
        hub = self._load_hub(partition) if self.settings.models else None
        engine = self._engine_cls(self.engine_config, catalog=self.catalog, store=store,
                                  scorer=hub)
        n_keys, timers = partition_index(self.customers, partition, n)
        committed = getattr(self.app.consumer, "_committed_offset", {})
        for topic in self.input_names:
            self.guard.expect(topic, partition, committed.get(TP(topic, partition)))
        processor = open_processor(partition, engine, self.meta.get(partition),
                                   timers, APP_VERSION, self.settings.max_message_bytes)
        del timers
        rt = self.runtimes[partition] = Runtime(partition, processor, store)
        log.info("partition %d: %d keys", partition, n_keys)
        return rt

    def _load_hub(self, partition: int) -> Any:
        """The partition's model hub: its last signed snapshot, or a new one."""
        return restore_hub(self.models.get(str(partition).encode()), self._snapshot_key,
                           self.engine_config.session_timeout, partition)

    def _snapshot_models(self, rt: Runtime, force: bool = False) -> None:
        hub = rt.processor.engine.scorer
        if hub is None:
            return
        now = time.monotonic()
        if not force and now - rt.last_snapshot < self.settings.model_snapshot_interval:
            return
        import base64

        self.models[str(rt.partition).encode()] = {
            "blob_b64": base64.b64encode(hub.snapshot()).decode("ascii"),
            "versions": dict(hub.versions)}
        rt.last_snapshot = now

    def forget(self, partitions: set[int]) -> None:
        """Drop what this worker holds for revoked partitions. Faust waited for every event
        taken to be acked before revoking (so they were flushed); whatever is left (a failed
        flush) is dropped unacked: the new owner replays it from the committed offset."""
        for p in partitions:
            self.runtimes.pop(p, None)
            self._touched.pop(p, None)
            self.guard.forget(p)
        if self._unacked:
            self._unacked = [ev for ev in self._unacked
                             if ev.message.partition not in partitions]

    async def on_agent_start(self) -> None:
        """The ingest agent starts (before its first batch)."""

    def on_stop(self) -> None:
        """The worker stops; its last flush is done."""

    def max_event_time(self) -> float | None:
        times = [rt.processor.engine.clock.max_seen for rt in self.runtimes.values()]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def _read_positions(self, tps: Any) -> Any:
        """``(tp, high-water mark, offset last read or None)`` for each of ``tps`` whose
        fetched high-water mark is known and positive (an unknown one is no backlog)."""
        consumer = self.app.consumer
        read = getattr(consumer, "_read_offset", None) or {}
        for tp in tps:
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - unknown: no backlog known
                continue
            if hw is not None and hw > 0:
                yield tp, hw, read.get(tp)

    def caught_up(self, partition: int) -> bool:
        """No known backlog on the partition's input topics (a tick must not overtake it)."""
        return all(pos is not None and hw - pos <= 1 for _, hw, pos in
                   self._read_positions(TP(topic, partition) for topic in self.input_names))

    def _assigned_inputs(self) -> tuple[TP, ...]:
        """This worker's assigned input partitions, read from the consumer once per consumer
        generation (the assignment only changes with it): :meth:`backlog` runs for nearly
        every event while catching up, and reading the assignment through Faust's consumer
        thread builds new sets each time (about 5 % of the worker's time in a profile)."""
        generation = self.app.consumer_generation_id
        cached = self._inputs_of_generation
        if cached is None or cached[0] != generation:
            inputs = self._input_set
            cached = (generation, tuple(tp for tp in self.app.consumer.assignment()
                                        if tp.topic in inputs))
            if cached[1]:       # an empty one is read again: the assignment may follow
                self._inputs_of_generation = cached
        return cached[1]

    def backlog(self) -> bool:
        """More than a batch of input is known to wait on the broker (fetched high-water
        marks against the offsets read, over this worker's input partitions): the ingest
        batches then fill up instead of going as soon as the fetched records are taken."""
        lag, limit = 0, self.settings.batch_max
        for _, hw, pos in self._read_positions(self._assigned_inputs()):
            if pos is not None:
                lag += hw - pos - 1
                if lag > limit:
                    return True
        return False

    # -- per batch -------------------------------------------------------------------
    async def on_batch(self, events: Sequence[Any]) -> None:
        """Everything for one batch of consumed events (Faust ``EventT``s, in stream order).
        Never raises (except cancellation): Faust acks the batch whatever happens.

        Per event, in order: the processor runs (or the clock tick), and its segment changes
        or dead letter are handed to a producer without waiting. The events are acked by
        the next :meth:`flush` (now, if one is due)."""
        touched = self._touched
        stats = self.stats
        set_event = _current_event.set
        clock_name = self.clock_name
        # the index of each partition's last input event: a clock tick before it in this
        # batch has a backlog behind it and is ignored (as :meth:`caught_up` does for the
        # backlog not yet taken from Faust)
        last_input: dict[int, int] = {}
        for i, ev in enumerate(events):
            if ev.message.topic != clock_name:
                last_input[ev.message.partition] = i
        if not stats["batches"] and self.freeze_gc_at_first_batch:
            freeze_startup()
        stats["batches"] += 1
        held: set[int] = set()                     # ids of events not processed: read again
        self._begin_batch()
        for i, ev in enumerate(events):
            msg = ev.message
            stats["messages"] += 1
            rt: Runtime | None = None
            # the table reads of this event go to its partition's RocksDB (Faust's store
            # picks the partition from the current event)
            set_event(weakref.ref(ev))
            try:
                p = msg.partition
                t = touched.get(p)
                if t is None:
                    rt = self.runtime(p)
                    t = touched[p] = _Touched(rt, ev)
                else:
                    rt = t.rt
                    t.event = ev
                if msg.topic != clock_name:
                    verdict = self.guard.check(msg.topic, p, msg.offset)
                    if verdict == "gap":
                        log.error("input %s[%d]: no records from offset %d to %d on reading "
                                  "again; going on from %d", msg.topic, p,
                                  *self.guard.last_gap[2:], msg.offset)
                    elif verdict != "ok":
                        held.add(id(ev))
                        await self._hold(msg, verdict)
                        continue
                rt.positions[msg.topic] = msg.offset
                if msg.topic == clock_name:
                    if last_input.get(p, -1) < i:
                        await self._record_tick(rt, msg)
                else:
                    await self._record_event(t, msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - never let an exception kill the agent
                stats["errors"] += 1
                log.exception("unexpected error at %s[%s]@%s", msg.topic, msg.partition,
                              msg.offset)
                if rt is not None and rt.store is not None:
                    rt.store.rollback()              # if it failed before commit
                if msg.topic in self.dlq:
                    await self._dead_letter_unexpected(msg, exc)
        if held:
            self._unacked.extend(ev for ev in events if id(ev) not in held)
        else:
            self._unacked.extend(events)
        await self._end_batch()
        if self.flush_due():
            await self.flush(wait=False)

    # what :meth:`on_batch` does with each record, here and in a split worker (streams/split.py)
    def _begin_batch(self) -> None:
        """A batch starts."""

    async def _record_event(self, t: _Touched, msg: Any) -> None:
        """An input event past the start guard: processed now."""
        key = await self._on_event(t.rt, msg, self._sends)
        if key is not None:
            keys = t.keys
            keys.pop(key, None)                      # in the order of their last event
            keys[key] = None

    async def _record_tick(self, rt: Runtime, msg: Any) -> None:
        """A clock tick with no input after it in the batch: applied now if it is due."""
        at = self._tick_time(rt.partition, msg)
        if at is None:
            return
        try:
            outputs = rt.processor.apply_tick(at)
        except Exception:  # noqa: BLE001
            log.exception("clock tick failed on partition %d", rt.partition)
            return
        if outputs:
            await self._send_changes(outputs, msg, self._sends)

    async def _end_batch(self) -> None:
        """Every record of the batch went through :meth:`on_batch`."""

    def _tick_time(self, partition: int, msg: Any) -> float | None:
        """The event time of a clock tick to apply, or None: a bad tick (ignored) or a
        partition with a known backlog (a tick must not overtake it)."""
        try:
            at = float(orjson.loads(msg.value)["at"])
        except Exception:  # noqa: BLE001 - a bad tick is ignored
            log.warning("ignoring bad clock tick at %s@%s", partition, msg.offset)
            return None
        if not self.caught_up(partition):
            return None
        self.stats["ticks"] += 1
        return at

    async def _hold(self, msg: Any, verdict: str) -> None:
        """A record after a gap at the start of a partition (see streams/continuity.py): it
        is neither processed nor acked (Faust forgets it, so that a rebalance does not wait
        for it); on ``rewind`` the worker asks its group for a new assignment, after which
        Faust's recovery reads the partition again from the committed offset."""
        unacked = getattr(self.app.consumer, "_unacked_messages", None)
        if unacked is not None:
            unacked.discard(msg)
        if verdict != "rewind":
            return
        to = self.guard.rewind_to(msg.topic, msg.partition)
        log.warning("input %s[%d] starts at offset %d after an assignment, the committed "
                    "offset is %d: records in between were not delivered; asking the group "
                    "for a new assignment to read them from %d", msg.topic, msg.partition,
                    msg.offset, to, to)
        try:
            await request_rejoin(self.app.consumer)
        except Exception:  # noqa: BLE001 - the guard asks again (rewind_every)
            log.exception("asking the group for a new assignment failed")

    def flush_due(self) -> bool:
        """Time to flush: the flush interval has passed since the last one, or Faust is
        rebalancing or stopping (it waits for every event taken to be acked)."""
        if not self._unacked and not self._touched:
            return False
        if time.monotonic() - self._last_flush >= self.settings.flush_interval:
            return True
        return self.app.should_stop or not self.app.flow_control.is_active()

    async def on_idle(self) -> None:
        """No event for a while: finish what is due (see :meth:`flush_due`)."""
        if self.flush_due():
            await self.flush()

    async def flush(self, wait: bool = True) -> None:
        """Finish the batches since the last flush, in this order: every output delivered;
        per partition, each changed customer written to the table once, its meta after
        them (:meth:`_flush`); then every event acked, so that Faust can commit its offset.
        Never raises (except cancellation). (``wait``: always, here; a split worker may
        finish in the background.)"""
        sends, self._sends = self._sends, []
        touched, self._touched = self._touched, {}
        events, self._unacked = self._unacked, []
        self._last_flush = time.monotonic()
        self.stats["flushes"] += 1
        if sends:
            await self._await_sends(sends)
        set_event = _current_event.set
        staged: list[tuple[int, list[tuple[bytes, bytes | None]]]] = []
        for p, t in touched.items():
            if p not in self.runtimes:
                continue                             # revoked meanwhile: replayed elsewhere
            set_event(weakref.ref(t.event))
            try:
                writes = self._flush(t)
            except Exception:  # noqa: BLE001 - the keys stay dirty: the next flush retries
                self.stats["errors"] += 1
                log.exception("writing the state of partition %d failed", p)
                continue
            if writes:
                staged.append((p, writes))
        await self.write_staged(staged)
        ack = self.ack
        if ack is not None:
            for ev in events:
                await ack(ev)

    async def _await_sends(self, sends: list[tuple[Any, Any]]) -> None:
        """Wait until every output since the last flush is delivered. An input message whose
        output could not be delivered is dead-lettered (stage ``processing``), as before
        batching: its state stays (it is written by this flush)."""
        results = await asyncio.gather(*(f for f, _ in sends), return_exceptions=True)
        failed: dict[tuple[str, int, int], tuple[Any, BaseException]] = {}
        for (_, msg), res in zip(sends, results):
            if isinstance(res, BaseException):
                failed.setdefault((msg.topic, msg.partition, msg.offset), (msg, res))
        for msg, exc in failed.values():
            self.stats["errors"] += 1
            log.error("delivery failed for the outputs of %s[%s]@%s: %r", msg.topic,
                      msg.partition, msg.offset, exc)
            if msg.topic in self.dlq and isinstance(exc, Exception):
                await self._dead_letter_unexpected(msg, exc)

    async def _dead_letter_unexpected(self, msg: Any, exc: Exception) -> None:
        """Dead-letter a message whose handling failed outside the engine (stage
        ``processing``), so that it is never acked without a trace."""
        try:
            dl = dead_letter(message_of(msg), exc, None, APP_VERSION,
                             self.settings.max_message_bytes, time.time())
            fut = await self.dlq[msg.topic].send(
                key=dl.key, value=orjson.dumps(dl.body), partition=msg.partition,
                headers=dl.headers)
            await fut
            self.stats["dead_lettered"] += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("could not dead-letter %s[%s]@%s", msg.topic, msg.partition,
                          msg.offset)

    async def _on_event(self, rt: Runtime, msg: Any, sends: list[tuple[Any, Any]]) -> str | None:
        """One input event; returns its customer key when it was applied (or skipped as a
        replay), None when it was dead-lettered."""
        outcome = rt.processor.apply(message_of(msg))
        if outcome.dead_letter is not None:
            dl = outcome.dead_letter
            sends.append((await self.dlq[msg.topic].send(
                key=dl.key, value=orjson.dumps(dl.body), partition=msg.partition,
                headers=dl.headers), msg))
            self.stats["dead_lettered"] += 1
            return None
        if outcome.skipped:
            self.stats["skipped"] += 1
        else:
            self.stats["processed"] += 1
        if outcome.outputs:
            await self._send_changes(outcome.outputs, msg, sends)
        return outcome.key

    async def _send_changes(self, outputs: list[dict], msg: Any,
                            sends: list[tuple[Any, Any]]) -> None:
        """Hand the changes (and their per-segment copies) to the output producer; their
        delivery is awaited by the next flush."""
        await self._send_records(change_records(outputs), msg, sends)

    async def _send_records(self, records: list[tuple[bytes, bytes, list[str]]], msg: Any,
                            sends: list[tuple[Any, Any]]) -> None:
        """Hand the changes (:func:`~streams.processor.change_records`) to the output
        producer; their delivery is awaited by the next flush."""
        names = self.segment_topic_names
        send = self.outputs.send
        changes = self.changes_name
        for key, body, segments in records:
            sends.append((await send(changes, key, body), msg))
            for seg in segments:
                topic = names.get(seg)
                if topic is not None:
                    sends.append((await send(topic, key, body), msg))
        self.stats["changes"] += len(records)

    def _flush(self, t: _Touched) -> list[tuple[bytes, bytes | None]]:
        """Take the partition's changed customers once each (the keys of the flushed events
        last, in the order of their last event), then its meta: the writes for
        :meth:`write_staged` (none with the memory store, written here through Faust's
        table). Runs with the partition's last event since the previous flush as Faust's
        current event: Faust's store and the changelog take the partition from it."""
        rt = t.rt
        meta = rt.processor.flush_state(last=t.keys)
        # after the states of this flush, in the same changelog partition (see PartitionMeta)
        if self.writer is None:
            self.meta[rt.partition] = meta
            writes = []
        else:
            writes = rt.store.table.take()
            writes.append((meta_key(rt.partition), faust_json(meta)))
        self._snapshot_models(rt)
        return writes

    async def write_staged(self, staged: list[tuple[int, list[tuple[bytes, bytes | None]]]]
                           ) -> None:
        """Write each partition's flush writes with :class:`~streams.changelog.TableWriter`:
        all to the changelog (:meth:`send_staged`), then, once delivered, each to its
        database (:meth:`store_sent`)."""
        if staged:
            await self.store_sent(await self.send_staged(staged))

    async def send_staged(self, staged: list[tuple[int, list[tuple[bytes, bytes | None]]]]
                          ) -> list[tuple[int, list[tuple[bytes, bytes | None]], list[Any]]]:
        """Hand each partition's writes to the producer for its changelog partition, in
        order; returns ``[(partition, writes, delivery futures)]`` for :meth:`store_sent`.

        A write that fails, here or there, after the producer's own retries, stops the
        worker (exit status ``EXIT_STATE_NOT_WRITTEN``) before anything of its flush is
        acked: the group replays it from the committed offsets, and the states it starts
        from are the changelog's. Going on would ack events whose state is not on the
        broker, or read states older than those the engine already moved past."""
        sent = []
        try:
            for p, writes in staged:
                sent.append((p, writes, await self.writer.send(p, writes)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker cannot go on (see above)
            self._not_written(exc)
        return sent

    async def store_sent(self, sent: list[tuple[int, list[tuple[bytes, bytes | None]],
                                                list[Any]]]) -> None:
        """Await the changelog records of :meth:`send_staged`, then write each partition's
        to its database (a partition revoked meanwhile is left to its changelog: its new
        owner restores from it). A failure stops the worker (see :meth:`send_staged`)."""
        writer = self.writer
        try:
            for p, writes, futures in sent:
                await asyncio.gather(*futures)
                if p in self.runtimes:
                    writer.store(p, writes, futures)
                    self.stats["table_writes"] += len(writes) - 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker cannot go on
            self._not_written(exc)

    def _not_written(self, exc: Exception) -> None:
        stop_worker(EXIT_STATE_NOT_WRITTEN,
                    f"the states of a flush could not be written to the table "
                    f"{self.writer.topic} ({type(exc).__name__}: {str(exc)[:300]}): stopping "
                    "this worker; what was not acked is replayed from the committed offsets",
                    exc)

    # -- clock -----------------------------------------------------------------------
    async def send_ticks(self) -> None:
        """Tell every partition how far event time has got on this worker."""
        at = self.max_event_time()
        if at is None:
            return
        body = orjson.dumps({"at": at, "source": self.app.conf.id})
        for p in range(self.settings.partitions):
            await self.clock.send(value=body, partition=p)

    def summary(self) -> dict[str, Any]:
        sizes: dict[str, int] = {}
        for rt in self.runtimes.values():
            for k, v in rt.processor.engine.counters.items():
                if k.startswith(("entered:", "exited:")):
                    change, name = k.split(":", 1)
                    sizes[name] = sizes.get(name, 0) + (v if change == "entered" else -v)
        try:
            assigned = sorted({tp.partition for tp in self._assigned_inputs()})
        except Exception:  # noqa: BLE001 - the consumer is not started yet
            assigned = []
        return {"stats": dict(self.stats), "start_guard": dict(self.guard.stats),
                "assigned": assigned,          # by the group (input partitions)
                "partitions": sorted(self.runtimes),   # with an engine (after an event)
                "watermarks": {p: rt.processor.engine.clock.watermark
                               for p, rt in self.runtimes.items()},
                "segment_sizes_since_start": sizes}


def register(app: faust.App, settings: Settings) -> Topology:
    """Register the retention topology on ``app``."""
    if settings.domain_process:
        from streams.split import SplitTopology

        if not settings.store.startswith("rocksdb"):
            # the domain process reads the states from the worker's RocksDB databases
            raise ValueError("RETENTION_DOMAIN_PROCESS=on needs the RocksDB store "
                             f"(RETENTION_STORE=rocksdb://), not {settings.store!r}")

        topo: Topology = SplitTopology(app, settings)
    else:
        topo = Topology(app, settings)

    batch_max, within = settings.batch_max, settings.batch_within

    @app.agent(topo.source, name="ingest", concurrency=1)
    async def ingest(stream: faust.StreamT) -> None:
        # the topology acks the events itself, after the flush that wrote their state
        # (Topology.flush, at most every RETENTION_FLUSH_INTERVAL, at once when Faust
        # rebalances or stops); on_batch never raises, and a batch that has begun is
        # finished and flushed even if the agent is cancelled (a stop)
        topo.ack = stream.ack
        await topo.on_agent_start()
        async for events in take_ready(stream, batch_max, within=within,
                                       backlog=topo.backlog, ack=False,
                                       on_idle=topo.on_idle):
            task = asyncio.ensure_future(topo.on_batch(events))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():
                    log.info("stopping: finishing the current batch of %d events",
                             len(events))
                    await asyncio.wait({task}, timeout=30.0)
                await asyncio.wait({asyncio.ensure_future(topo.flush())}, timeout=30.0)
                topo.on_stop()
                raise

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: set, **kwargs: Any) -> None:
        topo.forget({tp.partition for tp in revoked if tp.topic in topo.input_names
                     or tp.topic == topo.clock_name})

    if settings.clock_interval > 0:
        @app.timer(settings.clock_interval)
        async def clock_tick() -> None:
            try:
                await topo.send_ticks()
            except Exception:  # noqa: BLE001
                log.exception("sending clock ticks failed")

    topo.agent = ingest  # type: ignore[attr-defined]
    from streams.web import register_views  # operator views and metrics: docs/OPERATORS.md

    register_views(app, topo, settings)     # also /retention/summary/ (behind the token)
    return topo
