"""What happens to one message of one partition, with no Faust in sight.

:class:`PartitionProcessor` owns the engine of one partition (its event-time watermark and
due-time index are per partition) and turns a raw message into an :class:`Outcome`: the
validated segment changes to send, or a dead letter. The Faust agent (``streams.agents``)
only moves bytes: it calls :meth:`PartitionProcessor.handle`, sends what comes back, then
flushes the state. This keeps the agent thin and lets the whole ingest path be tested with
lists in and lists out.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.clock import parse_time
from models.contract import (ContractError, dead_letter_record, event_key, parse_event,
                             validate_output)
from models.engine import Engine

__all__ = ["DeadLetter", "Message", "Outcome", "PartitionProcessor", "admit", "change_records",
           "dead_letter", "dlq_headers", "open_processor", "restore_hub"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: float | None = None   # the record timestamp (seconds): when it was received


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None          # the original bytes
    body: dict                   # dead_letter v1 record
    headers: list[tuple[str, bytes]]


@dataclass
class Outcome:
    outputs: list[dict] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    skipped: bool = False         # replayed after a crash, already applied
    key: str | None = None        # the event's customer key (its state is written last)


def dlq_headers(msg: Message, stage: str, error: str, app_version: str,
                schema_version: str) -> list[tuple[str, bytes]]:
    """The original headers, then the ``dlq.*`` headers describing the rejection."""
    own = [("dlq.source_topic", msg.topic), ("dlq.source_partition", str(msg.partition)),
           ("dlq.source_offset", str(msg.offset)), ("dlq.stage", stage),
           ("dlq.error", error[:1000]), ("dlq.schema_version", schema_version),
           ("dlq.app_version", app_version)]
    kept = [(k, v) for k, v in msg.headers if not k.startswith("dlq.")]
    return kept + [(k, v.encode("utf-8")) for k, v in own]


class PartitionProcessor:
    """The engine of one partition and the rules of the edge.

    ``max_bytes``: larger messages are dead-lettered (stage ``size``). A message without a
    key, or whose key is not the event's customer key, is dead-lettered (stage ``key``):
    co-partitioning depends on it.
    """

    def __init__(self, partition: int, engine: Engine, app_version: str,
                 max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.partition = partition
        self.engine = engine
        self.app_version = app_version
        self.max_bytes = max_bytes
        self.wall = clock
        self.processed = 0
        self.dead_lettered = 0
        self.skipped = 0

    def handle(self, msg: Message) -> Outcome:
        """One input message -> outputs or a dead letter. Never raises (except
        ``BaseException``s such as cancellation). What a dead-lettered event changed is
        undone by :meth:`apply`, which runs this inside the store's undo log."""
        try:
            event, key = admit(msg, self.max_bytes)
        except ContractError as exc:
            return self._dead(msg, exc, getattr(exc, "event", None))
        return self.handle_admitted(msg, event, key)

    def handle_admitted(self, msg: Message, event: dict, key: str) -> Outcome:
        """:meth:`handle` of a message that passed :func:`admit` (``event``, ``key``: what it
        returned)."""
        engine = self.engine
        try:
            state = engine.store.get(key)
            if state is not None and state.positions.get(msg.topic, -1) >= msg.offset:
                # replayed after a crash: already in the state. Move event time as the
                # first run did, so timers fire as they did then.
                self.skipped += 1
                engine.counters["replayed_skipped"] += 1
                outputs = engine.complete_link(event, (msg.topic, msg.offset))
                outputs += self.observe(parse_time(event["occurred_at"]))
                return Outcome(outputs=self._checked(outputs), skipped=True)
            outputs = engine.process(event, position=(msg.topic, msg.offset),
                                     received_at=msg.timestamp)
            outputs = self._checked(outputs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
            log.warning("processing failed at %s[%d]@%d: %s: %s", msg.topic, msg.partition,
                        msg.offset, type(exc).__name__, str(exc)[:200])
            return self._dead(msg, exc, event)
        self.processed += 1
        return Outcome(outputs=outputs, key=key)

    def apply(self, msg: Message, admitted: tuple[dict, str] | None = None) -> Outcome:
        """:meth:`handle` (or :meth:`handle_admitted` with ``admitted``, what :func:`admit`
        returned) inside the store's undo log (the engine's store is a
        :class:`streams.state.TableStore`): a dead-lettered event leaves no state behind,
        only the keys it touched are put back as they were before it (the other events
        since the last flush keep their changes), and the partition's event time with it."""
        before = self._begin()
        outcome = (self.handle(msg) if admitted is None
                   else self.handle_admitted(msg, *admitted))
        if outcome.dead_letter is not None:
            self._rollback(before)
        else:
            self.engine.store.commit()
        return outcome

    def apply_tick(self, t: float) -> list[dict]:
        """:meth:`tick` inside the store's undo log; a failure is undone as in :meth:`apply`
        and raised."""
        before = self._begin()
        try:
            outputs = self.tick(t)
        except Exception:
            self._rollback(before)
            raise
        self.engine.store.commit()
        return outputs

    def flush_state(self, last: Any = None) -> dict[str, Any]:
        """Write the engine's changed customers to the store's table once each (``last``:
        the keys of the flushed events, written after the others, in order) and return the
        partition meta to write after them."""
        engine = self.engine
        dirty = engine.dirty_keys()
        if dirty:
            engine.store.flush(dirty, last=last)
            engine.clear_dirty()
        return engine.export_meta()

    def _begin(self) -> tuple[Any, Any]:
        """Open the store's undo log for one event; returns the clock to restore."""
        self.engine.store.begin()
        clock = self.engine.clock
        return clock.max_seen, clock.late_events

    def _rollback(self, clock_before: tuple[Any, Any]) -> None:
        """The event failed: the keys it touched put back as they were (the store's undo
        log), the partition's event time as it was before it, and the timers of the
        restored keys back in the due-time index (the failed event may have fired and
        popped them). A timer entry that was not popped is now there twice: once the first
        fires and reschedules the key, the second is skipped as stale (its due time no
        longer matches the state's). Engine counters (statistics) are not rolled back."""
        engine = self.engine
        keys = engine.store.rollback()
        engine.clock.max_seen, engine.clock.late_events = clock_before
        for key in keys:
            state = engine.store.get(key)
            if state is not None and state.due_at is not None:
                heapq.heappush(engine._heap, (state.due_at, key))

    def observe(self, t: float) -> list[dict]:
        """Move this partition's event time to ``t`` (if later) and fire what is due."""
        clock = self.engine.clock
        if clock.max_seen is None or t > clock.max_seen:
            clock.max_seen = t
        wm = clock.watermark
        return self.engine.advance(wm) if wm is not None else []

    def tick(self, t: float) -> list[dict]:
        """A clock tick (see docs/OPERATIONS.md): event time of the stream as a whole."""
        return self._checked(self.observe(t))

    @staticmethod
    def _checked(outputs: list[dict]) -> list[dict]:
        for out in outputs:
            validate_output("segment_change", out)
        return outputs

    def _dead(self, msg: Message, exc: BaseException, event: dict | None) -> Outcome:
        self.dead_lettered += 1
        return Outcome(dead_letter=dead_letter(msg, exc, event, self.app_version,
                                               self.max_bytes, self.wall()))


def admit(msg: Message, max_bytes: int) -> tuple[dict, str]:
    """The edge's rules, before any state: the event decoded and validated against its
    schema, and its customer key, which must be the message key (co-partitioning depends
    on it). Raises :class:`ContractError` (its ``event`` attribute: the decoded event, when
    it got that far)."""
    event: dict | None = None
    try:
        event = parse_event(msg.value, max_bytes)  # type: ignore[arg-type]
        key = event_key(event)
        if msg.key is None:
            raise ContractError("key", "message has no key (must be the customer key)")
        if msg.key != key.encode("utf-8"):
            raise ContractError("key", "message key is not the event's customer key "
                                       "(customer_id, else anonymous_id)")
    except ContractError as exc:
        exc.event = event                               # type: ignore[attr-defined]
        raise
    return event, key


def dead_letter(msg: Message, exc: BaseException, event: dict | None, app_version: str,
                max_bytes: int, at: float) -> DeadLetter:
    """The dead letter of ``msg``: the ``dead_letter`` v1 record, the original bytes and
    the ``dlq.*`` headers."""
    from models.contract import SCHEMA_VERSION

    body = dead_letter_record(exc, msg.value, msg.key, source_topic=msg.topic,
                              partition=msg.partition, offset=msg.offset,
                              app_version=app_version, at=at, event=event,
                              max_value_bytes=max_bytes)
    headers = dlq_headers(msg, body["stage"], body["error"], app_version, SCHEMA_VERSION)
    return DeadLetter(msg.key, msg.value, body, headers)


def restore_hub(saved: Any, snapshot_key: bytes, session_timeout: float, partition: int) -> Any:
    """A partition's model hub from its saved snapshot (``{"blob_b64": ...}`` as kept in the
    models table), or a new one. A snapshot whose signature does not check is refused (never
    unpickled) and logged."""
    import base64

    from models.scoring import HubConfig, ModelHub
    from models.scoring.hub import SnapshotError

    config = HubConfig(snapshot_key=snapshot_key, session_timeout=session_timeout)
    if saved:
        try:
            hub = ModelHub.restore(base64.b64decode(saved["blob_b64"]), snapshot_key, config)
            log.info("partition %d: models restored (%s)", partition, hub.versions)
            return hub
        except (SnapshotError, KeyError, ValueError) as exc:
            log.error("partition %d: model snapshot refused (%s); starting new models. "
                      "Every worker of an app must sign with the same key: set the same "
                      "RETENTION_MODEL_KEY for all of them", partition, exc)
    return ModelHub(config)


def change_records(outputs: list[dict]) -> list[tuple[bytes, bytes, list[str]]]:
    """The segment changes as sent: ``(customer key, JSON body, segments)`` each, the
    segments being those whose topic gets a copy (the entered one, else the ones left).

    >>> change_records([{"customer_id": "c1", "segment": None,
    ...                  "previous_segments": ["vip"]}])[0][::2]
    (b'c1', ['vip'])
    """
    import orjson

    out = []
    for change in outputs:
        segment = change.get("segment")
        out.append((change["customer_id"].encode("utf-8"), orjson.dumps(change),
                    [segment] if segment else list(change.get("previous_segments", ()))))
    return out


def open_processor(partition: int, engine: Engine, meta: dict | None,
                   timers: list[tuple[float, str]], app_version: str,
                   max_bytes: int) -> PartitionProcessor:
    """The processor of a partition whose engine was just built over its restored store:
    the engine meta (clock, counters) and the due-time index put back."""
    if meta:
        engine.import_meta(meta)
    indexed = engine.load_index(timers)
    engine.clear_dirty()
    log.info("partition %d: engine ready, %d timers, watermark %s", partition, indexed,
             engine.clock.watermark)
    return PartitionProcessor(partition, engine, app_version, max_bytes)
