"""The domain half of a worker in two processes (``RETENTION_DOMAIN_PROCESS=on``).

A Faust worker runs everything on one core: its read loop, the contract, the engines, the
online models, the state path and the sends. The domain part alone costs about as much as
Faust's own per-event ceiling (docs/BENCHMARKS.md, section 1), so one process cannot reach
more than about half of that ceiling. With this option the worker starts a child process,
this module, that owns the partitions' engines; the Faust process only moves bytes (reads,
sends, table writes, acks). Both halves run at once on two cores.

The child reads frames from its standard input and answers on its standard output, in
order (one reader, one writer: the parent's order is the processing order). A frame is a
4-byte big-endian length and a ``marshal``-ed tuple (plain values only: it never carries
code, and it only ever comes from the parent process, never from a topic):

``("settings", dict)``        first frame: the worker's :class:`~streams.settings.Settings`
``("start", p, path, saved)``  open partition ``p``: its RocksDB database (the primary,
                              written by Faust) as a secondary instance, its engine meta and
                              due-time index from there, its models from ``saved`` (the
                              models table's value, or None)
``("batch", seq, records)``   records of one ingest batch, in stream order:
                              ``("e", topic, p, offset, key, value, headers, timestamp,
                              event, customer key)`` (admitted by the parent: decoded and
                              validated, :func:`streams.processor.admit`) or
                              ``("t", p, at)`` (a clock tick); answered with
                              ``("batch", seq, results, clocks)``, one result per record
                              (see :meth:`DomainSide.batch`)
``("flush", seq, [p, ...])``  take the changed states of those partitions; answered
                              with ``("flush", seq, {p: (writes, meta, snapshot)})``
``("written", seq)``          the parent wrote flush ``seq`` to the tables: catch up with
                              them and drop the copies kept until then
``("forget", [p, ...])``      drop revoked partitions
``("view", seq, name, arg)``  a read for the web views, answered ``("view", seq, doc)``
``("stop",)``                 exit

Reads of states not cached come from the secondary instance; states this process flushed
are kept (:class:`ReplicaTable`) until the parent has written them and the secondary has
caught up, so a read never sees a state older than one this process produced. Any failure
here ends the process; the parent then ends the worker, and the events not yet acked are
processed again from the committed offsets (skipped exactly by the per-customer positions).
"""

from __future__ import annotations

import base64
import logging
import marshal
import os
import shutil
import struct
import sys
import tempfile
import time
from typing import Any, BinaryIO

import orjson

from models.partitioning import partition_for
from streams.gc_tuning import apply_thresholds, freeze_startup
from streams.processor import Message, change_records, open_processor, restore_hub
from streams.settings import APP_VERSION, Settings
from streams.state import TableStore, customer_keys, faust_json, index_items, meta_key

__all__ = ["DomainSide", "ReplicaTable", "read_frame", "widen_pipe", "write_frame"]

log = logging.getLogger("streams.domain_process")

_LEN = struct.Struct(">I")


def write_frame(out: BinaryIO, obj: Any) -> None:
    body = marshal.dumps(obj)
    out.write(_LEN.pack(len(body)) + body)


def read_frame(inp: BinaryIO) -> Any:
    head = inp.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    body = inp.read(n)
    if len(body) < n:
        return None
    return marshal.loads(body)


class ReplicaTable:
    """The customers table of one partition as the child sees it: reads from a secondary
    instance of Faust's RocksDB database, writes collected for the parent.

    A written (or deleted) key is kept here with the flush that wrote it until the parent
    confirms that flush (:meth:`written`), after which the secondary has caught up with it.
    Values are JSON bytes, as Faust's table keeps them (its ``json`` serializer)."""

    fresh_reads = True          # every read decodes a new copy (TableStore relies on it)

    def __init__(self, path: str, partition: int, keep_max: int = 5_000) -> None:
        from rocksdict import AccessType, Options, Rdict

        self.partition = partition
        self._secondary_dir = tempfile.mkdtemp(prefix=f"retention-secondary-{partition}-")
        options = Options(raw_mode=True)
        options.set_max_open_files(-1)
        self.db = Rdict(path, options=options,
                        access_type=AccessType.secondary(self._secondary_dir))
        self.pending: list[tuple[bytes, bytes | None]] = []
        self._kept: dict[bytes, tuple[int, bytes | None]] = {}
        self.flush_seq = 0
        #: kept writes beyond this many: catch up with the primary and drop those written
        #: (a catch-up costs a few ms, too much for every flush of every partition)
        self.keep_max = keep_max
        self._confirmed = -1

    # -- what TableStore uses -------------------------------------------------------------
    def get(self, key: bytes, default: Any = None) -> Any:
        kept = self._kept.get(key)
        raw = kept[1] if kept is not None else self.db.get(key)
        return default if raw is None else orjson.loads(raw)

    def __contains__(self, key: bytes) -> bool:
        kept = self._kept.get(key)
        return kept[1] is not None if kept is not None else self.db.get(key) is not None

    def __setitem__(self, key: bytes, value: Any) -> None:
        raw = faust_json(value)
        self.pending.append((key, raw))
        self._kept[key] = (self.flush_seq, raw)

    def __delitem__(self, key: bytes) -> None:
        self.pending.append((key, None))
        self._kept[key] = (self.flush_seq, None)

    def keys(self) -> list[str]:
        """The customer keys (secondary and kept writes)."""
        out = {k for k, v in self._kept.items() if v[1] is not None}
        out.update(k for k in self.db.keys() if k not in self._kept)
        return customer_keys(out)

    # -- the partition's start and the flush protocol ---------------------------------------
    def meta(self) -> Any:
        raw = self.db.get(meta_key(self.partition))
        return orjson.loads(raw) if raw is not None else None

    def index(self) -> tuple[int, list[tuple[float, str]]]:
        return index_items(self.db.items(), orjson.loads)

    def take(self, seq: int) -> list[tuple[bytes, bytes | None]]:
        """The writes of flush ``seq`` (in order); the next ones belong to the next flush."""
        out, self.pending = self.pending, []
        for key, _ in out:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept[key] = (seq, kept[1])
        self.flush_seq = seq + 1
        return out

    def written(self, seq: int) -> None:
        """The parent wrote the flushes up to ``seq`` to the primary."""
        self._confirmed = seq
        if len(self._kept) > self.keep_max:
            self.catch_up()

    def catch_up(self) -> None:
        """Read the primary's new writes; drop the kept writes it now has."""
        self.db.try_catch_up_with_primary()
        confirmed = self._confirmed
        for key in [k for k, (s, _) in self._kept.items() if s <= confirmed]:
            del self._kept[key]

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            shutil.rmtree(self._secondary_dir, ignore_errors=True)


class DomainSide:
    """The engines of a worker's partitions, driven by frames (see the module docstring).
    Pure of Faust: it only knows records, states as JSON and its secondary databases."""

    def __init__(self, settings: Settings) -> None:
        from models.engine import Engine
        from models.segments import load_catalog

        self.settings = settings
        self.catalog = load_catalog()
        self.engine_config = settings.engine_config()
        self._engine_cls = Engine
        self._snapshot_key = settings.snapshot_key() if settings.models else b""
        if settings.models:
            import models.scoring  # noqa: F401 - River's import (about a second) now, not at the first event
        self.processors: dict[int, Any] = {}
        self.tables: dict[int, ReplicaTable] = {}
        self.last_snapshot: dict[int, float] = {}
        #: per partition, the keys of the events since the last flush, by their last event
        self.recent: dict[int, dict[str, None]] = {}

    # -- partitions -----------------------------------------------------------------------
    def start(self, partition: int, path: str, saved_models: Any) -> None:
        self.forget([partition])
        n = self.settings.partitions
        table = ReplicaTable(path, partition)
        store = TableStore(table, keys=table.keys,
                           owns=lambda key: partition_for(key, n) == partition)
        hub = (restore_hub(saved_models, self._snapshot_key,
                           self.engine_config.session_timeout, partition)
               if self.settings.models else None)
        engine = self._engine_cls(self.engine_config, catalog=self.catalog, store=store,
                                  scorer=hub)
        n_keys, timers = table.index()
        self.processors[partition] = open_processor(
            partition, engine, table.meta(), timers, APP_VERSION,
            self.settings.max_message_bytes)
        self.tables[partition] = table
        self.last_snapshot[partition] = time.monotonic()
        log.info("partition %d: %d keys (domain process)", partition, n_keys)

    def forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self.processors.pop(p, None)
            self.last_snapshot.pop(p, None)
            self.recent.pop(p, None)
            table = self.tables.pop(p, None)
            if table is not None:
                table.close()

    # -- records --------------------------------------------------------------------------
    def batch(self, records: list[tuple]) -> list[tuple]:
        """One result per record:

        - ``("ok", key, changes)`` applied (``changes``: :func:`change_records`);
        - ``("skip", key, changes)`` a replay, already in the state;
        - ``("dead", key, body, headers)`` dead-lettered (``body``: the dead-letter record
          as JSON bytes);
        - ``("tick", changes)`` a clock tick applied; ``("tick-failed", error)``;
        - ``("error", error)`` a failure outside the processor (the parent dead-letters the
          record, stage ``processing``).
        """
        out: list[tuple] = []
        for rec in records:
            try:
                if rec[0] == "t":
                    _, p, at = rec
                    try:
                        changes = self.processors[p].apply_tick(at)
                    except Exception as exc:  # noqa: BLE001 - undone by apply_tick
                        log.exception("clock tick failed on partition %d", p)
                        out.append(("tick-failed", f"{type(exc).__name__}: {exc}"[:500]))
                        continue
                    out.append(("tick", change_records(changes)))
                    continue
                _, topic, p, offset, key, value, headers, ts, event, ekey = rec
                processor = self.processors[p]
                outcome = processor.apply(Message(topic, p, offset, key, value,
                                                  tuple(headers), ts), (event, ekey))
                if outcome.dead_letter is not None:
                    dl = outcome.dead_letter
                    out.append(("dead", dl.key, orjson.dumps(dl.body), list(dl.headers)))
                else:
                    keys = self.recent.setdefault(p, {})
                    keys.pop(outcome.key, None)
                    keys[outcome.key] = None
                    out.append(("skip" if outcome.skipped else "ok", outcome.key,
                                change_records(outcome.outputs)))
            except Exception as exc:  # noqa: BLE001 - reported; the parent dead-letters it
                log.exception("record failed in the domain process")
                out.append(("error", f"{type(exc).__name__}: {exc}"[:500]))
        return out

    def clocks(self) -> dict[int, tuple]:
        """What the parent shows of each engine: ``(counters, max_seen, watermark,
        late_events)``."""
        out = {}
        for p, proc in self.processors.items():
            e = proc.engine
            out[p] = (dict(e.counters), e.clock.max_seen, e.clock.watermark,
                      e.clock.late_events)
        return out

    # -- flush ----------------------------------------------------------------------------
    def flush(self, seq: int, partitions: list[int]) -> dict[int, tuple]:
        """``{p: (writes, meta JSON, model snapshot or None)}`` for each of ``partitions``:
        the changed states in the order to write them (``(key, JSON or None for a
        delete)``; the keys of the flushed events last, in the order of their last event),
        the meta to write after them, and the models' signed snapshot when one is due."""
        out = {}
        now = time.monotonic()
        for p in partitions:
            proc = self.processors.get(p)
            if proc is None:
                continue
            meta = proc.flush_state(last=self.recent.pop(p, None))
            writes = self.tables[p].take(seq)
            snapshot = None
            hub = proc.engine.scorer
            if hub is not None and (now - self.last_snapshot[p]
                                    >= self.settings.model_snapshot_interval):
                snapshot = (base64.b64encode(hub.snapshot()).decode("ascii"),
                            dict(hub.versions))
                self.last_snapshot[p] = now
            out[p] = (writes, faust_json(meta), snapshot)
        return out

    def written(self, seq: int) -> None:
        for table in self.tables.values():
            table.written(seq)

    # -- reads for the web views ----------------------------------------------------------
    def view(self, name: str, arg: Any) -> Any:
        if name == "customer":
            # (state, features, model versions, as of): what the customer view shows
            p = partition_for(arg, self.settings.partitions)
            proc = self.processors.get(p)
            if proc is None:
                return None
            state, features, versions, as_of = proc.engine.lookup(arg)
            return (orjson.dumps(state.to_dict()) if state is not None else b"null",
                    orjson.dumps(features) if features is not None else None, versions, as_of)
        if name == "models":
            from streams.web.modelstats import model_report

            hubs = {p: proc.engine.scorer for p, proc in sorted(self.processors.items())
                    if proc.engine.scorer is not None}
            return orjson.dumps(model_report(hubs)) if hubs else None
        raise ValueError(f"no view {name!r}")


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """Answer frames until ``stop`` or the end of the input."""
    first = read_frame(inp)
    if not first or first[0] != "settings":
        log.error("the first frame must be the settings")
        return 2
    settings = Settings(**first[1])
    # the worker's garbage collector tuning (streams/gc_tuning.py): the engines allocate
    # per event as the worker did; start-up objects frozen once the first batch arrives
    apply_thresholds(settings.gc_thresholds)
    side = DomainSide(settings)
    frozen = settings.gc_thresholds is None
    while True:
        frame = read_frame(inp)
        if frame is None or frame[0] == "stop":
            side.forget(list(side.processors))
            return 0
        kind = frame[0]
        if kind == "batch":
            if not frozen:
                frozen = freeze_startup() or True
            results = side.batch(frame[2])
            write_frame(out, ("batch", frame[1], results, side.clocks()))
            out.flush()
        elif kind == "flush":
            write_frame(out, ("flush", frame[1], side.flush(frame[1], frame[2])))
            out.flush()
        elif kind == "written":
            side.written(frame[1])
        elif kind == "start":
            side.start(frame[1], frame[2], frame[3])
        elif kind == "forget":
            side.forget(frame[1])
        elif kind == "view":
            try:
                doc = side.view(frame[2], frame[3])
            except Exception as exc:  # noqa: BLE001 - a failed read is answered, not fatal
                log.exception("view %s failed", frame[2])
                doc = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            write_frame(out, ("view", frame[1], doc))
            out.flush()
        else:
            raise ValueError(f"unknown frame {kind!r}")


def widen_pipe(fd: int) -> int | None:
    """Raise the capacity of the pipe on ``fd`` from 64 KiB to the most an unprivileged
    process may (``/proc/sys/fs/pipe-max-size``, 1 MiB by default), so that the frames in
    flight fit (up to two batch sizes of records, 400-800 bytes each): the parent writes them
    at once and the child reads them at once, neither waiting for the other's loop. Returns
    the new capacity, or None where this cannot be done (not Linux, not a pipe); the pipe then
    keeps its capacity."""
    try:
        import fcntl
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = int(f.read())
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, ValueError, ImportError, AttributeError):
        return None


def main() -> int:
    level = os.environ.get("RETENTION_LOG_LEVEL", "info").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="[%(asctime)s] [domain %(process)d] [%(levelname)s] %(message)s")
    # the frames go to a copy of the standard output; the standard output itself becomes
    # the standard error, so that nothing else (a print, a library writing to file
    # descriptor 1) can write into the frame channel
    sys.stdout.flush()
    for fd in (0, 1):
        widen_pipe(fd)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
