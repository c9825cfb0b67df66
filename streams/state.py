"""The state path: a write-back cache in front of the Faust table, one per partition.

The engine's ``store`` is a :class:`TableStore`: reads come from the cache, else from the
Faust table (RocksDB or memory) and are decoded once; writes only touch the cache, and the
engine records the keys it changed (``engine.dirty_keys()``). :meth:`TableStore.flush`
writes the dirty keys to the table (one changelog record per key) and is called by the
agent *after* the outputs of those changes were delivered and *before* the message is
acked, so that a committed offset always has its state and outputs on the broker. Today the
agent flushes after every message; flushing once per batch (coalescing the writes of a
busy key) needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any

from models.partitioning import partition_for
from models.state import CustomerState

__all__ = ["META_PREFIX", "PartitionMeta", "TableStore", "partition_keys"]

_FAUST_INTERNAL = b"__faust"
#: reserved key prefix of the partition meta in the customers table (never a customer key:
#: a NUL byte starts it)
META_PREFIX = b"\x00retention-meta:"


class PartitionMeta:
    """The engine meta of each partition, kept in the customers table under
    ``META_PREFIX + partition``. Written from the stream loop after the partition's states, it
    goes to the same changelog partition, in order: whatever prefix of the changelog survives
    a crash holds states and a clock of the same point of the stream."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, partition: bytes) -> Any:
        return self.table.get(META_PREFIX + partition)

    def __setitem__(self, partition: bytes, meta: dict) -> None:
        self.table[META_PREFIX + partition] = meta


def partition_keys(table: Any, partition: int, partitions: int) -> list[str]:
    """Keys of ``table`` that belong to ``partition``.

    With RocksDB each partition has its own database, which gives the exact set; the memory
    store has one dict, filtered with Kafka's default partitioner (the ingest agent only
    accepts messages whose key is the event's customer key, so the two agree)."""
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if isinstance(dbs, dict):
        db = dbs.get(partition)
        if db is None:
            return []
        out = []
        for k in db.keys():
            if isinstance(k, (bytes, bytearray)) and (k.startswith(_FAUST_INTERNAL)
                                                      or k.startswith(META_PREFIX)):
                continue  # Faust's persisted offset, the partition meta
            out.append(k.decode("utf-8") if isinstance(k, (bytes, bytearray)) else str(k))
        return out
    keys = (k.decode("utf-8") if isinstance(k, (bytes, bytearray)) else str(k)
            for k in list(table.keys())
            if not (isinstance(k, (bytes, bytearray)) and k.startswith(META_PREFIX)))
    return [k for k in keys if partition_for(k, partitions) == partition]


class TableStore(MutableMapping[str, CustomerState]):
    """``MutableMapping[str, CustomerState]`` over a Faust table, with a write-back cache.

    ``table`` is anything with ``get``, ``__setitem__``, ``__delitem__``, ``__contains__``
    holding ``CustomerState.to_dict()`` values under UTF-8 ``bytes`` keys (a Faust table
    with ``key_type=bytes``, so the changelog keys are the plain customer keys; or a dict).
    """

    def __init__(self, table: Any, keys: Callable[[], Iterable[str]] | None = None,
                 max_cached: int = 20_000, owns: Callable[[str], bool] | None = None) -> None:
        self.table = table
        self.owns = owns  # keys of other partitions are invisible (memory store holds all)
        self._keys = keys
        self.max_cached = max_cached
        self._cache: dict[str, CustomerState] = {}
        self._deleted: set[str] = set()
        self.reads = 0
        self.writes = 0

    # -- mapping ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> CustomerState:
        state = self._cache.get(key)
        if state is not None:
            return state
        if key in self._deleted or (self.owns is not None and not self.owns(key)):
            raise KeyError(key)
        raw = self.table.get(key.encode("utf-8"))
        self.reads += 1
        if raw is None:
            raise KeyError(key)
        state = CustomerState.from_dict(raw)
        self._cache[key] = state
        return state

    def __setitem__(self, key: str, value: CustomerState) -> None:
        self._deleted.discard(key)
        self._cache[key] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError when absent  # noqa: B018
        self._cache.pop(key, None)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[str]:
        seen = set(self._cache)
        yield from list(self._cache)
        if self._keys is not None:
            for k in self._keys():
                if k not in seen and k not in self._deleted:
                    yield k

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- write-back ------------------------------------------------------------------
    def flush(self, keys: Iterable[str], last: str | None = None) -> int:
        """Write ``keys`` (the engine's dirty keys) to the table; returns records written.

        ``last`` (the key of the event, whose state holds the source position) is written
        after the others: all keys of a partition go to the same changelog partition, in
        order, so if the position reached the broker, so did the other keys it changed (a
        linked visitor's tombstone), and a replay that skips the event leaves nothing out."""
        ordered = [k for k in keys if k != last]
        if last is not None and last in keys:
            ordered.append(last)
        n = 0
        for key in ordered:
            state = self._cache.get(key)
            if state is not None:
                self.table[key.encode("utf-8")] = state.to_dict()
                n += 1
            elif key in self._deleted:
                bkey = key.encode("utf-8")
                if bkey in self.table:
                    del self.table[bkey]
                    n += 1
                self._deleted.discard(key)
        self.writes += n
        self._trim()
        return n

    def discard(self, keys: Iterable[str]) -> None:
        """Forget cached changes of ``keys`` (after a failed event): the next read reloads
        the last flushed state from the table."""
        for key in keys:
            self._cache.pop(key, None)
            self._deleted.discard(key)

    def _trim(self) -> None:
        extra = len(self._cache) - self.max_cached
        if extra > 0:
            drop = extra + self.max_cached // 5
            for key in list(self._cache)[:drop]:
                del self._cache[key]
