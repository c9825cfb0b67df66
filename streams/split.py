"""A worker in two processes: the Faust side (``RETENTION_DOMAIN_PROCESS=on``).

:class:`SplitTopology` is the :class:`~streams.agents.Topology` whose engines live in a child
process (:mod:`streams.domain_process`). Per batch, the Faust side checks the start guard,
decides the clock ticks (as the one-process worker does), ships the raw records to the
child in frames of at most ``CHUNK`` records and goes back to Faust for the next batch
without waiting: the child works on batch *k* while Faust reads batch *k + 1* (at most
``IN_FLIGHT`` batch sizes of records in the child). A reader task takes the child's answers
in order and hands the changes and dead letters to the producers at once, so latency does
not wait for a flush, nor for the rest of a long batch.

The flush keeps the one-process guarantees, in the same order: every batch answered, the
child's changed states of the flush taken (in the order to write them, the meta last),
every output delivered, the states and meta (the child's JSON bytes) written to the
partition's RocksDB database and changelog (:class:`~streams.changelog.TableWriter`) and
delivered, then the events acked. A state reaches the table at most once per flush
interval; a committed offset always has its state and outputs on the broker.

If the child ends, the worker ends at once (exit status 70): nothing since the last flush
was acked, so the group replays it from the committed offsets, skipped exactly by the
per-customer source positions. The web views read the engines' counters and clocks as of
the child's last answer, a customer's state as of the last flush (at most
``RETENTION_FLUSH_INTERVAL`` old) and the models' report as of the last refresh (every
``REPORT_EVERY`` seconds).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import marshal
import os
import struct
import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.streams import _current_event
from faust.types import TP

from models.contract import ContractError
from models.state import CustomerState
from streams.agents import Topology, message_of
from streams.processor import DeadLetter, admit, dead_letter
from streams.settings import APP_VERSION
from streams.state import meta_key, partition_keys

__all__ = ["DomainClient", "SplitTopology", "frames"]

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
#: records in one frame to the child, at most: the child answers the first records of a
#: long batch while it works on the rest (an event waits for its frame, not its batch)
CHUNK = 128
#: records shipped to the child and not yet answered, at most, in ingest batches
#: (``RETENTION_BATCH_MAX``): the agent waits beyond it
IN_FLIGHT = 2
#: seconds between two refreshes of the models' report shown by the web views
REPORT_EVERY = 2.0
#: flushes whose changelog records are on their way to the broker, at most (the next
#: completion waits beyond it)
FINISHING_MAX = 2
#: the worker's exit status when its domain process ends
EXIT_DOMAIN_LOST = 70


class DomainClient:
    """The child process and its frames (see :mod:`streams.domain_process`)."""

    def __init__(self, settings: Any, on_frame: Any) -> None:
        self.settings = settings
        self.on_frame = on_frame
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self.stopping = False

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streams.domain_process",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 26)
        self.send(("settings", dataclasses.asdict(self.settings)))
        self._reader = asyncio.ensure_future(self._read())
        log.info("domain process %d started", self.proc.pid)

    def send(self, frame: tuple) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        body = marshal.dumps(frame)
        self.proc.stdin.write(_LEN.pack(len(body)) + body)

    async def drain(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        await self.proc.stdin.drain()

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        try:
            while True:
                head = await out.readexactly(4)
                frame = marshal.loads(await out.readexactly(_LEN.unpack(head)[0]))
                await self.on_frame(frame)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - the worker cannot go on without it
            if self.stopping:
                return
            code = self.proc.returncode
            log.critical("the domain process ended (%s: %s, exit status %s): stopping this "
                         "worker; what was not acked is replayed from the committed "
                         "offsets", type(exc).__name__, str(exc)[:300], code,
                         exc_info=not isinstance(exc, asyncio.IncompleteReadError))
            logging.shutdown()
            os._exit(EXIT_DOMAIN_LOST)


@dataclass
class _Clock:
    max_seen: float | None = None
    watermark: float | None = None
    late_events: int = 0


class _TableReader:
    """A customer's state as of the last flush, from the Faust table."""

    def __init__(self, table: Any, partition: int, partitions: int) -> None:
        self.table = table
        self.partition = partition
        self.partitions = partitions

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.table.get(key.encode("utf-8"))
        return CustomerState.from_dict(raw) if isinstance(raw, dict) else default

    def __iter__(self) -> Any:
        return iter(partition_keys(self.table, self.partition, self.partitions))


@dataclass
class EngineMirror:
    """What the Faust side knows of an engine in the child: its counters and clock as of the
    child's last answer, its states as of the last flush."""

    store: Any
    counters: dict[str, int] = field(default_factory=dict)
    clock: _Clock = field(default_factory=_Clock)
    scorer: Any = None


@dataclass
class _RemoteProcessor:
    partition: int
    engine: EngineMirror


@dataclass
class _RemoteRuntime:
    partition: int
    processor: _RemoteProcessor
    store: Any = None
    positions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Shipped:
    """A batch in the child: its input messages, in order, each with its dead letter when
    it was refused here (the contract), else None (the child answers for it)."""

    messages: list[tuple[Any, Any]]
    done: asyncio.Future
    records: int = 0


def frames(messages: list[tuple[Any, Any]], records: list[tuple],
           chunk: int) -> list[tuple[list, list]]:
    """``messages`` (each with its dead letter when refused here, else None) and the
    ``records`` of those not refused, in order, cut into frames of at most ``chunk``
    records: ``[(messages, records), ...]``, every message in one frame, in order (a refused
    one stays between the records around it); a batch of refused messages only is one
    frame.

    >>> ms = [("a", None), ("b", "refused"), ("c", None), ("d", None)]
    >>> [([m for m, _ in f], r) for f, r in frames(ms, ["A", "C", "D"], 2)]
    [(['a', 'b', 'c'], ['A', 'C']), (['d'], ['D'])]
    """
    out = []
    first = start = taken = 0            # the frame's first message, first record, records
    for i, (_msg, refused) in enumerate(messages):
        if refused is None:
            taken += 1
            if taken == chunk and i + 1 < len(messages):
                out.append((messages[first:i + 1], records[start:start + taken]))
                first, start, taken = i + 1, start + taken, 0
    out.append((messages[first:], records[start:]))
    return out


class SplitTopology(Topology):
    """The topology with its engines in a :mod:`streams.domain_process` child."""

    def __init__(self, app: Any, settings: Any) -> None:
        super().__init__(app, settings)
        self.client = DomainClient(settings, self._on_frame)
        self._seq = 0
        self._shipped: dict[int, _Shipped] = {}
        self._in_flight = 0                          # records shipped, not yet answered
        self._in_flight_max = IN_FLIGHT * max(1, settings.batch_max)
        self._requests: dict[int, asyncio.Future] = {}
        self._flush_replies: dict[int, asyncio.Future] = {}
        self._completion: asyncio.Future | None = None
        self._before_previous: asyncio.Future | None = None
        self._finishers: collections.deque[asyncio.Future] = collections.deque()
        self._report: tuple[list[int], dict | None] = ([], None)
        self._report_at = 0.0
        self._report_pending = False

    # -- lifecycle ------------------------------------------------------------------------
    async def on_agent_start(self) -> None:
        """Start the child with the agent: its imports (the models) take about a second,
        which the first batch would otherwise wait for."""
        if self.client.proc is None:
            await self.client.start()

    def runtime(self, partition: int, first: tuple[str, int] | None = None) -> Any:
        rt = self.runtimes.get(partition)
        if rt is not None:
            return rt
        data = self.customers.data
        data._db_for_partition(partition)            # opened (and created) by Faust
        path = str(data.partition_path(partition))
        saved = self.models.get(str(partition).encode()) if self.settings.models else None
        committed = getattr(self.app.consumer, "_committed_offset", {})
        for topic in self.input_names:
            self.guard.expect(topic, partition, committed.get(TP(topic, partition)))
        meta = self.meta.get(partition) or {}
        mirror = EngineMirror(_TableReader(self.customers, partition, self.settings.partitions),
                              counters=dict(meta.get("counters", {}) or {}))
        self.client.send(("start", partition, path, dict(saved) if saved else None))
        rt = self.runtimes[partition] = _RemoteRuntime(partition,
                                                       _RemoteProcessor(partition, mirror))
        return rt

    def forget(self, partitions: set[int]) -> None:
        super().forget(partitions)
        if self.client.proc is not None:
            self.client.send(("forget", sorted(partitions)))

    # -- per batch --------------------------------------------------------------------------
    # Topology.on_batch (the start guard and the clock ticks decided as in one process) with
    # the records collected here and shipped to the child at the batch's end; the answers
    # are handled by _on_frame
    def _begin_batch(self) -> None:
        self._records: list[tuple] = []
        #: the batch's messages in order, each with its dead letter when refused here
        self._messages: list[tuple[Any, DeadLetter | None]] = []

    async def _record_event(self, t: Any, msg: Any) -> None:
        # the contract here, the engine there: it balances the two processes
        max_bytes = self.settings.max_message_bytes
        m = message_of(msg)
        try:
            event, key = admit(m, max_bytes)
        except ContractError as exc:
            self._messages.append((msg, dead_letter(m, exc, getattr(exc, "event", None),
                                                    APP_VERSION, max_bytes, time.time())))
            return
        self._records.append(("e", m.topic, m.partition, m.offset, m.key, m.value, m.headers,
                              m.timestamp, event, key))
        self._messages.append((msg, None))

    async def _record_tick(self, rt: Any, msg: Any) -> None:
        at = self._tick_time(rt.partition, msg)
        if at is not None:
            self._records.append(("t", rt.partition, at))
            self._messages.append((msg, None))

    async def _end_batch(self) -> None:
        """Ship the batch in frames of at most ``CHUNK`` records (even with only refused
        records: their dead letters go in their order); wait while more than ``IN_FLIGHT``
        batch sizes of records are in the child.

        A live stream gives small batches, each shipped at once; a backlog gives full ones,
        whose first frames the child answers while it works on the last."""
        if self._messages:
            for messages, records in frames(self._messages, self._records, CHUNK):
                self._ship(messages, records)
            await self.client.drain()
        while self._in_flight > self._in_flight_max and self._shipped:
            await asyncio.shield(next(iter(self._shipped.values())).done)

    def _ship(self, messages: list[tuple[Any, DeadLetter | None]],
              records: list[tuple]) -> None:
        seq = self._seq = self._seq + 1
        done = asyncio.get_running_loop().create_future()
        self._shipped[seq] = _Shipped(messages, done, len(records))
        self._in_flight += len(records)
        self.client.send(("batch", seq, records))

    async def _on_frame(self, frame: tuple) -> None:
        """An answer of the child (in the order of the frames sent)."""
        kind, seq = frame[0], frame[1]
        if kind == "batch":
            shipped = self._shipped.pop(seq)
            self._in_flight -= shipped.records
            try:
                await self._on_results(shipped.messages, frame[2], frame[3])
            except Exception:  # noqa: BLE001 - counted and logged; the batch is done
                self.stats["errors"] += 1
                log.exception("handling the results of batch %d failed", seq)
            finally:
                shipped.done.set_result(None)
        elif kind == "flush":
            # every batch before the flush has been answered: its outputs are in _sends
            sends, self._sends = self._sends, []
            self._flush_replies.pop(seq).set_result((frame[2], sends))
        else:
            fut = self._requests.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result(frame[2])

    async def _on_results(self, messages: list[tuple[Any, DeadLetter | None]],
                          results: list[tuple], clocks: dict[int, tuple]) -> None:
        """The records of one batch, in order: refused here (their dead letter made), or
        answered by the child."""
        stats = self.stats
        sends = self._sends
        answers = iter(results)
        for msg, refused in messages:
            if refused is not None:
                res: tuple = ("dead", refused.key, orjson.dumps(refused.body),
                              refused.headers)
            else:
                res = next(answers)
            kind = res[0]
            if kind in ("ok", "skip"):
                stats["processed" if kind == "ok" else "skipped"] += 1
                if res[2]:
                    await self._send_records(res[2], msg, sends)
            elif kind == "dead":
                sends.append((await self.dlq[msg.topic].send(
                    key=res[1], value=res[2], partition=msg.partition, headers=res[3]), msg))
                stats["dead_lettered"] += 1
            elif kind == "tick":
                if res[1]:
                    await self._send_records(res[1], msg, sends)
            elif kind == "tick-failed":
                log.error("clock tick failed on partition %d: %s", msg.partition, res[1])
            else:
                stats["errors"] += 1
                log.error("the domain process failed on %s[%s]@%s: %s", msg.topic,
                          msg.partition, msg.offset, res[1])
                if msg.topic in self.dlq:
                    await self._dead_letter_unexpected(msg, RuntimeError(res[1]))
        for p, (counters, max_seen, watermark, late) in clocks.items():
            rt = self.runtimes.get(p)
            if rt is not None:
                engine = rt.processor.engine
                engine.counters = counters
                engine.clock = _Clock(max_seen, watermark, late)

    async def _request(self, frame_kind: str, *args: Any) -> Any:
        seq = self._seq = self._seq + 1
        fut = asyncio.get_running_loop().create_future()
        self._requests[seq] = fut
        self.client.send((frame_kind, seq, *args))
        await self.client.drain()
        return await fut

    # -- flush ------------------------------------------------------------------------------
    async def flush(self, wait: bool = True) -> None:
        """As :meth:`Topology.flush`, with the states taken from the child, in two steps so
        that the child never waits for the broker:

        1. now, in the agent: the events and partitions since the last flush are taken and
           the child is asked for the changed states of those partitions, after the batches
           already shipped (the cut is a point of the child's input);
        2. in the background (:meth:`_complete`), once the child answered: every output of
           those batches delivered, the states and metas sent to the changelog; then
           (:meth:`_finish`, while the next completion goes on), once those records are
           delivered, the states stored in the databases, the child told, and the events
           acked. Meanwhile the agent ships the next batches and the child works on them.
           The completions run one after another, in order, and so do the finishes; at
           most one completion waits while the agent goes on, and at most
           ``FINISHING_MAX`` finishes.

        ``wait``: return once the completion and its finish are done (a stop, a rebalance,
        an idle agent).
        Never raises (except cancellation)."""
        previous = self._completion
        if self._before_previous is not None and not self._before_previous.done():
            await asyncio.shield(self._before_previous)    # at most two flushes pending
        touched, self._touched = self._touched, {}
        events, self._unacked = self._unacked, []
        self._last_flush = time.monotonic()
        if touched or events:
            self.stats["flushes"] += 1
            live = {p: t.event for p, t in touched.items() if p in self.runtimes}
            seq = self._seq = self._seq + 1
            reply = asyncio.get_running_loop().create_future()
            self._flush_replies[seq] = reply
            self.client.send(("flush", seq, sorted(live)))
            await self.client.drain()
            self._before_previous = previous
            self._completion = asyncio.ensure_future(
                self._complete(seq, reply, live, events, previous))
        if wait and self._completion is not None:
            await asyncio.shield(self._completion)
            if self._finishers:
                await asyncio.shield(self._finishers[-1])

    async def _complete(self, seq: int, reply: asyncio.Future, live: dict[int, Any],
                        events: list[Any], previous: asyncio.Future | None) -> None:
        """Step 2 of :meth:`flush`, after the previous flush's (table writes and acks stay
        in flush order)."""
        try:
            if previous is not None and not previous.done():
                await asyncio.shield(previous)
            taken, sends = await reply
            if sends:
                await self._await_sends(sends)
            set_event = _current_event.set
            staged = []
            for p, (writes, meta, snapshot) in taken.items():
                event = live.get(p)
                if event is None or p not in self.runtimes:
                    continue                         # revoked meanwhile: replayed elsewhere
                # the states, then the meta, in one changelog partition, in order (see
                # PartitionMeta)
                writes.append((meta_key(p), meta))
                staged.append((p, writes))
                if snapshot is not None:
                    set_event(weakref.ref(event))
                    try:
                        self.models[str(p).encode()] = {"blob_b64": snapshot[0],
                                                        "versions": snapshot[1]}
                    except Exception:  # noqa: BLE001 - the next snapshot replaces it
                        self.stats["errors"] += 1
                        log.exception("writing the model snapshot of partition %d failed", p)
            sent = await self.send_staged(staged)
            # the rest waits for the broker: the next completion may go on meanwhile
            finishers = self._finishers
            while finishers and finishers[0].done():
                finishers.popleft()
            if len(finishers) >= FINISHING_MAX:
                await asyncio.shield(finishers[0])
            finishers.append(asyncio.ensure_future(
                self._finish(seq, sent, events, finishers[-1] if finishers else None)))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - not acked: replayed from the committed offset
            self.stats["errors"] += 1
            log.exception("completing flush %d failed", seq)

    async def _finish(self, seq: int, sent: list[tuple[int, list, list[Any]]],
                      events: list[Any], previous: asyncio.Future | None) -> None:
        """The end of flush ``seq``, after the previous flush's end: its changelog records
        delivered and its states stored (:meth:`~streams.agents.Topology.store_sent`), the
        child told, then its events acked."""
        try:
            if previous is not None and not previous.done():
                await asyncio.shield(previous)
            await self.store_sent(sent)
            self.client.send(("written", seq))
            await self.client.drain()
            self._refresh_report()
            ack = self.ack
            if ack is not None:
                for ev in events:
                    await ack(ev)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - not acked: replayed from the committed offset
            self.stats["errors"] += 1
            log.exception("finishing flush %d failed", seq)

    # -- the web views ----------------------------------------------------------------------
    def _refresh_report(self) -> None:
        now = time.monotonic()
        if self._report_pending or now - self._report_at < REPORT_EVERY or not self.runtimes:
            return
        self._report_pending = True
        self._report_at = now

        async def refresh() -> None:
            try:
                asked = time.time()
                doc = await self._request("view", "models", None)
                parts = sorted(self.runtimes)
                report = orjson.loads(doc) if doc else None
                if report is not None:
                    report["refreshed_at"] = asked     # the report is as of then
                self._report = (parts, report)
            except Exception:  # noqa: BLE001 - the views keep the last report
                log.exception("refreshing the models' report failed")
            finally:
                self._report_pending = False

        asyncio.ensure_future(refresh())

    async def customer_lookup(self, key: str) -> tuple | None:
        """``(state, features, model versions, as of)`` of ``key`` as the domain process
        holds it now (its state may be newer than the table's); None when the partition is
        not there."""
        found = await self._request("view", "customer", key)
        if found is None:
            return None
        raw, features, versions, as_of = found
        state = orjson.loads(raw)
        return (CustomerState.from_dict(state) if state is not None else None,
                orjson.loads(features) if features is not None else None, versions, as_of)

    def model_report(self) -> tuple[list[int], dict | None]:
        """``(partitions, report)`` of the child's model hubs, as of the last refresh (its
        ``refreshed_at``, wall time); an old one is refreshed for the next reader (the flushes
        refresh it while events flow, this when they stopped)."""
        self._refresh_report()
        return self._report

    def on_stop(self) -> None:
        """The worker stops (after its last flush): the child ends with it (on the end of
        its input), which is then no failure."""
        self.client.stopping = True

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        proc = self.client.proc
        out["domain_process"] = {"pid": proc.pid if proc is not None else None,
                                 "frames_in_flight": len(self._shipped),
                                 "records_in_flight": self._in_flight}
        return out
