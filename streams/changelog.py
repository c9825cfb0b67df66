"""A flush's writes to a Faust table, with the bytes Faust's ``table[key] = value`` would
write, at a fraction of its cost, and the changelog first.

A flush writes every changed customer of a partition once. Through Faust's table each write
is ``Table.__setitem__``: the value dumped to JSON twice (the store, the changelog), a
``FutureMessage`` through Faust's producer buffer, a delivery callback that writes the
persisted offset to RocksDB, per key. On a stream where every event is another customer
(``bench/pipeline_throughput.py --traffic uniform``) that was a third of the Faust loop.

:class:`TableWriter` takes the values as JSON bytes (:class:`PendingWrites` collects them
from a :class:`~streams.state.TableStore`; the split worker's child dumps them anyway) and
writes a partition's batch in two steps:

1. :meth:`TableWriter.send`: to the changelog topic's partition of the same number, in
   order, one record per key, through Faust's producer (the one Faust's own table writes
   use);
2. :meth:`TableWriter.store`, once those records are delivered: to the partition's RocksDB
   database in one write batch, with the last offset as the database's persisted offset
   (where Faust's recovery resumes the changelog).

So the database never holds a value that is not in the changelog, and its persisted offset
always matches its content (Faust writes the database first and the offset per record when
each is delivered: a crash in between leaves a database ahead of its changelog, which a
restart on another disk does not see). A crash between the two steps leaves the database
behind; the restart reads the rest from the changelog.

The bytes are Faust's: :func:`~streams.state.faust_json` uses the options of Faust's
``json`` codec, so a value restored from the changelog, or read through the table, is the
value written. A delete is a tombstone (``None``), as Faust's ``del table[key]``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.state import faust_json

__all__ = ["PendingWrites", "TableWriter", "uses_rocksdb"]


def uses_rocksdb(store_url: str) -> bool:
    """Whether a table store URL (``RETENTION_STORE``) is RocksDB, the store whose
    databases :class:`TableWriter` writes.

    >>> uses_rocksdb("rocksdb://"), uses_rocksdb("memory://")
    (True, False)
    """
    return str(store_url).startswith("rocksdb")


class TableWriter:
    """Writes batches of ``(key bytes, JSON bytes or None)`` to ``table``'s changelog, then
    to its store (see the module docstring), through ``app``'s producer."""

    def __init__(self, table: Any, app: Any) -> None:
        self.table = table
        self.app = app
        self.topic = table.changelog_topic.get_topic_name()

    async def send(self, partition: int,
                   items: list[tuple[bytes, bytes | None]]) -> list[asyncio.Future]:
        """Hand ``items`` (in order) to the producer for the changelog partition; returns
        their delivery futures (await them, then :meth:`store`)."""
        producer = self.app.producer
        if not producer._started.is_set():             # pragma: no cover - started with the App
            await producer.maybe_start()
        send = producer.send
        topic = self.topic
        return [await send(topic, key, value, partition, None, None) for key, value in items]

    def store(self, partition: int, items: list[tuple[bytes, bytes | None]],
              futures: list[asyncio.Future]) -> int:
        """After ``futures`` (the :meth:`send` of ``items``) were delivered: write ``items``
        to the partition's database in one batch, with their last offset as its persisted
        offset. Returns that offset."""
        last = max(f.result().offset for f in futures)
        store = self.table.data
        if getattr(store, "use_rocksdict", True):
            import rocksdict
            batch = rocksdict.WriteBatch(raw_mode=True)
        else:                                             # pragma: no cover - python-rocksdb
            import rocksdb
            batch = rocksdb.WriteBatch()
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(store.offset_key, str(last).encode())
        store._db_for_partition(partition).write(batch)
        return last


class PendingWrites:
    """A Faust table as :class:`~streams.state.TableStore` sees it, with its writes
    collected as Faust's JSON bytes for a :class:`TableWriter` (:meth:`take`) instead of
    written one by one. Reads go to the table: the agent stores what a flush collected
    before it reads again."""

    fresh_reads = True        # RocksDB decodes a new copy on every read

    def __init__(self, table: Any) -> None:
        self.table = table
        self.pending: list[tuple[bytes, bytes | None]] = []

    def get(self, key: bytes, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __contains__(self, key: bytes) -> bool:
        return key in self.table

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.pending.append((key, faust_json(value)))

    def __delitem__(self, key: bytes) -> None:
        self.pending.append((key, None))

    def take(self) -> list[tuple[bytes, bytes | None]]:
        """The writes collected since the last take, in order."""
        out, self.pending = self.pending, []
        return out
