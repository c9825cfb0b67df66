"""The state path: a write-back cache in front of the Faust table, one per partition.

The engine's ``store`` is a :class:`TableStore`: reads come from the cache, else from the
Faust table (RocksDB or memory) and are decoded once; writes only touch the cache, and the
engine records the keys it changed (``engine.dirty_keys()``). :meth:`TableStore.flush`
writes the dirty keys to the table (one changelog record per key) and is called by the
agent once per batch, *after* the outputs of the batch were delivered and *before* the
batch is acked, so that a committed offset always has its state and outputs on the broker.

Within a batch, one event can fail half way (an exception inside the engine, or an output
that fails validation) while earlier events of the batch left unflushed changes in the
cache. :meth:`TableStore.begin` / :meth:`TableStore.rollback` undo exactly what the failed
event did to the store: the first time the event touches a key, the key's state as it was
is recorded (for a key with unflushed changes a copy: its field values, with the containers
the engine changes in place copied as JSON; else only a marker: its last flushed copy is in
the table), and a rollback puts those back.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import fields
from typing import Any

import orjson

from models.partitioning import partition_for
from models.state import REPLACED_WHOLE, CustomerState

__all__ = ["FAUST_JSON", "META_PREFIX", "PartitionMeta", "TableStore", "customer_keys",
           "faust_json", "index_items", "meta_key", "partition_index", "partition_keys"]

_FAUST_INTERNAL = b"__faust"
# undo markers: "was deleted (unflushed)" and "as in the table (reload it)"
_DELETED = object()
_RELOAD = object()
#: reserved key prefix of the partition meta in the customers table (never a customer key:
#: a NUL byte starts it)
META_PREFIX = b"\x00retention-meta:"


def meta_key(partition: int) -> bytes:
    """The customers-table key of ``partition``'s engine meta.

    >>> meta_key(3)
    b'\\x00retention-meta:3'
    """
    return META_PREFIX + str(partition).encode()


#: the options of Faust's ``json`` codec with orjson (``faust.utils.json.dumps``): a value
#: dumped with them is the bytes Faust writes for ``table[key] = value``
FAUST_JSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


#: the same without ``OPT_NON_STR_KEYS``: the same bytes for a value whose keys are all
#: strings (every state) and 8-30 % faster on states; a non-string key raises
_STR_KEYS_JSON = orjson.OPT_UTC_Z


def faust_json(value: Any) -> bytes:
    """``value`` as Faust's json codec writes it to a table and its changelog.

    >>> faust_json({"a": 1, "b": [1.5, None]})
    b'{"a":1,"b":[1.5,null]}'
    >>> faust_json({1: "a key that is not a string"})
    b'{"1":"a key that is not a string"}'
    """
    try:
        return orjson.dumps(value, option=_STR_KEYS_JSON)
    except TypeError:
        return orjson.dumps(value, option=FAUST_JSON)


class PartitionMeta:
    """The engine meta of each partition, kept in the customers table under
    :func:`meta_key`. Written from the stream loop after the partition's states, it
    goes to the same changelog partition, in order: whatever prefix of the changelog survives
    a crash holds states and a clock of the same point of the stream."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, partition: int) -> Any:
        return self.table.get(meta_key(partition))

    def __setitem__(self, partition: int, meta: dict) -> None:
        self.table[meta_key(partition)] = meta


def _customer_key(key: Any) -> str | None:
    """A table key as a customer key; None for Faust's persisted offset and the partition
    meta, which share the table."""
    if isinstance(key, (bytes, bytearray)):
        if key.startswith(_FAUST_INTERNAL) or key.startswith(META_PREFIX):
            return None
        return key.decode("utf-8")
    return str(key)


def customer_keys(keys: Iterable[Any]) -> list[str]:
    """The customer keys among table keys (Faust's persisted offset and the partition meta
    left out).

    >>> customer_keys([b"c1", META_PREFIX + b"0", b"__faust_offset", b"c2"])
    ['c1', 'c2']
    """
    return [c for c in map(_customer_key, keys) if c is not None]


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
        return customer_keys(db.keys())
    return [c for c in map(_customer_key, list(table.keys()))
            if c is not None and partition_for(c, partitions) == partition]


def partition_index(table: Any, partition: int, partitions: int) -> tuple[int, list[tuple[float, str]]]:
    """``(customer keys, [(due time, key), ...])`` of ``partition``: what a worker needs to
    start the partition's engine (its due-time index), read straight from the store.

    No state is decoded into a ``CustomerState`` and nothing goes through a
    :class:`TableStore` cache: states are read when an event or a timer needs them. (Reading
    every state through the cache took 151-198 s and about 10 GB at 1,000,000 keys,
    docs/BENCHMARKS.md section 4.) With RocksDB the partition's database is iterated and
    each value decoded by the table's own serializer; the memory store holds decoded
    values, filtered by the partitioner as in :func:`partition_keys`."""
    store = table.data
    dbs = getattr(store, "_dbs", None)
    if isinstance(dbs, dict):
        db = dbs.get(partition)
        if db is None:
            return 0, []
        return index_items(db.items(), store._decode_value)
    items = ((k, v) for k, v in list(table.items())
             if (c := _customer_key(k)) is not None and partition_for(c, partitions) == partition)
    return index_items(items)


def index_items(items: Iterable[tuple[Any, Any]], decode: Callable[[Any], Any] | None = None,
                ) -> tuple[int, list[tuple[float, str]]]:
    """Count the customer keys of ``(key, stored state)`` pairs and collect their timers.

    >>> index_items([(b"a", {"due_at": 5.0}), (b"b", {"due_at": None}),
    ...              (META_PREFIX + b"0", {"clock": {}})])
    (2, [(5.0, 'a')])
    """
    n = 0
    entries: list[tuple[float, str]] = []
    for k, v in items:
        key = _customer_key(k)
        if key is None:
            continue
        n += 1
        if decode is not None:
            v = decode(v)
        due = v.get("due_at") if isinstance(v, dict) else None
        if due is not None:
            entries.append((float(due), key))
    return n, entries


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
        self._unflushed: set[str] = set()     # keys written or deleted since their last flush
        self._rewrite: set[str] = set()       # restored by a rollback: written at next flush
        self._undo: dict[str, Any] | None = None   # the current event's undo log
        # RocksDB decodes a fresh value on every read, so the table holds an independent
        # copy of every flushed state. A dict or the memory store hands back the very
        # object it was given: reads and undo records are copied there.
        self._fresh_reads = getattr(table, "fresh_reads", False) or isinstance(
            getattr(getattr(table, "data", None), "_dbs", None), dict)
        self.reads = 0
        self.writes = 0

    # -- mapping ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> CustomerState:
        state = self.get(key)
        if state is None:
            raise KeyError(key)
        return state

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """``Mapping.get`` without an exception for a missing key (the engine asks for new
        customers all the time)."""
        undo = self._undo
        if undo is not None and key not in undo:
            self._record(key)
        state = self._cache.get(key)
        if state is not None:
            return state
        if key in self._deleted or (self.owns is not None and not self.owns(key)):
            return default
        raw = self.table.get(key.encode("utf-8"))
        self.reads += 1
        if raw is None:
            return default
        if not self._fresh_reads:
            raw = orjson.loads(orjson.dumps(raw))   # never share lists with the table
        state = CustomerState.from_dict(raw)
        self._cache[key] = state
        return state

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __setitem__(self, key: str, value: CustomerState) -> None:
        undo = self._undo
        if undo is not None and key not in undo:
            self._record(key)
        self._deleted.discard(key)
        self._unflushed.add(key)
        self._cache[key] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError when absent  # noqa: B018
        self._cache.pop(key, None)
        self._deleted.add(key)
        self._unflushed.add(key)

    # -- undo (one event) ------------------------------------------------------------
    def begin(self) -> None:
        """Start recording what the next event does to the store (see :meth:`rollback`)."""
        self._undo = {}

    def commit(self) -> None:
        """The event succeeded: keep its changes (until :meth:`flush` writes them)."""
        self._undo = None

    def rollback(self) -> list[str]:
        """The event failed: put back every key it touched as it was at :meth:`begin`,
        keeping the unflushed changes of earlier events. Returns the keys put back."""
        undo, self._undo = self._undo, None
        if not undo:
            return []
        cache, deleted = self._cache, self._deleted
        for key, before in undo.items():
            if before is _RELOAD:            # clean: the table has it as it was
                cache.pop(key, None)
                deleted.discard(key)
                self._unflushed.discard(key)
            elif before is _DELETED:
                cache.pop(key, None)
                deleted.add(key)
            else:                            # unflushed changes of earlier events
                cache[key] = _restore(before)
                deleted.discard(key)
                self._unflushed.add(key)
                self._rewrite.add(key)
        return list(undo)

    def _record(self, key: str) -> None:
        """Note how ``key`` is before the current event changes it."""
        assert self._undo is not None
        state = self._cache.get(key)
        if key in self._deleted:
            self._undo[key] = _DELETED
        elif state is None or (self._fresh_reads and key not in self._unflushed):
            self._undo[key] = _RELOAD
        else:
            self._undo[key] = _snapshot(state)

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
    def flush(self, keys: Iterable[str], last: str | Iterable[str] | None = None) -> int:
        """Write ``keys`` (the engine's dirty keys) to the table; returns records written.

        ``last``: the key (or keys, in order) of the flushed events, whose states hold the
        source positions; they are written after the other keys. All keys of a partition go
        to the same changelog partition, in order, so if an event's position reached the
        broker, so did the other keys it changed (a linked visitor's tombstone), and a replay
        that skips the event leaves nothing out."""
        if self._rewrite:
            keys = set(keys) | self._rewrite
            self._rewrite = set()
        elif not isinstance(keys, (set, frozenset, dict)):
            keys = set(keys)
        if last is None:
            tail: list[str] = []
        elif isinstance(last, str):
            tail = [last] if last in keys else []
        else:
            tail = [k for k in last if k in keys]
        if tail:
            at_end = set(tail)
            ordered = [k for k in keys if k not in at_end] + tail
        else:
            ordered = list(keys)
        # linked visitors' markers after everything else: if a crash cuts the flush, a
        # customer that absorbed a visitor is on the broker before the visitor's marker, and
        # the replay of the link event completes it (Engine.complete_link); the other order
        # would lose the visitor's history (marker there, absorption not)
        cache = self._cache
        markers = [k for k in ordered if getattr(cache.get(k), "retired", False)]
        if markers:
            retired = set(markers)
            ordered = [k for k in ordered if k not in retired] + markers
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
        self._unflushed.difference_update(ordered)
        self.writes += n
        self._trim()
        return n

    def discard(self, keys: Iterable[str]) -> None:
        """Forget cached changes of ``keys`` (after a failed event): the next read reloads
        the last flushed state from the table."""
        for key in keys:
            self._cache.pop(key, None)
            self._deleted.discard(key)
            self._unflushed.discard(key)
            self._rewrite.discard(key)

    def _trim(self) -> None:
        extra = len(self._cache) - self.max_cached
        if extra > 0:
            drop = extra + self.max_cached // 5
            for key in [k for k in self._cache if k not in self._unflushed][:drop]:
                del self._cache[key]


#: an undo record's fields taken as they are: immutable values, and the containers the engine
#: only ever replaces as a whole (models.state.REPLACED_WHOLE); the other containers are
#: changed in place, so they are copied (as JSON, which every state goes through anyway;
#: shallow copies of the flat ones measured no faster)
_SCALAR_TYPES = frozenset({"int", "float", "str", "bool", "int | None", "float | None",
                           "str | None", "bool | None"})
_FIELD_NAMES = tuple(f.name for f in fields(CustomerState))
_COPIED = tuple(f.name for f in fields(CustomerState)
                if str(f.type) not in _SCALAR_TYPES and f.name not in REPLACED_WHOLE)
_COPIED_AT = tuple(_FIELD_NAMES.index(name) for name in _COPIED)
_all_values = operator.attrgetter(*_FIELD_NAMES)
_copied_values = operator.attrgetter(*_COPIED)


def _snapshot(state: CustomerState) -> Any:
    """An independent copy of ``state`` as it is now, whatever the engine then does to it
    (:func:`_restore` gives it back): a tuple ``(field values, the containers changed in
    place as JSON)``. This runs for nearly every event (a burst of one customer's events
    keeps the key unflushed), so only what can change in place is copied: a third of the
    state's JSON, in less than half the time of the whole (docs/BENCHMARKS.md)."""
    if type(state) is CustomerState:
        return _all_values(state), orjson.dumps(_copied_values(state))
    import copy

    return copy.deepcopy(state)


def _restore(before: Any) -> CustomerState:
    if type(before) is tuple:
        values = list(before[0])
        for at, value in zip(_COPIED_AT, orjson.loads(before[1])):
            values[at] = value
        return CustomerState(*values)
    import copy

    return copy.deepcopy(before)
