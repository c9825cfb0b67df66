"""What happens to one message of one partition, with no Faust in sight.

:class:`PartitionProcessor` owns the engine of one partition (its event-time watermark and
due-time index are per partition) and turns a raw message into an :class:`Outcome`: the
validated segment changes to send, or a dead letter. The Faust agent (``streams.agents``)
only moves bytes: it calls :meth:`PartitionProcessor.handle`, sends what comes back, then
flushes the state. This keeps the agent thin and lets the whole ingest path be tested with
lists in and lists out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.clock import parse_time
from models.contract import (ContractError, dead_letter_record, event_key, parse_event,
                             validate_output)
from models.engine import Engine

__all__ = ["DeadLetter", "Message", "Outcome", "PartitionProcessor", "dlq_headers"]

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
        ``BaseException``s such as cancellation). On a processing error the engine's
        uncommitted changes are discarded by the caller via ``engine.dirty_keys()``."""
        event: dict | None = None
        try:
            event = parse_event(msg.value, self.max_bytes)  # type: ignore[arg-type]
            key = event_key(event)
            if msg.key is None:
                raise ContractError("key", "message has no key (must be the customer key)")
            if msg.key != key.encode("utf-8"):
                raise ContractError("key", "message key is not the event's customer key "
                                           "(customer_id, else anonymous_id)")
        except ContractError as exc:
            return self._dead(msg, exc, event)
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
        body = dead_letter_record(exc, msg.value, msg.key, source_topic=msg.topic,
                                  partition=msg.partition, offset=msg.offset,
                                  app_version=self.app_version, at=self.wall(),
                                  event=event, max_value_bytes=self.max_bytes)
        from models.contract import SCHEMA_VERSION

        headers = dlq_headers(msg, body["stage"], body["error"], self.app_version,
                              SCHEMA_VERSION)
        return Outcome(dead_letter=DeadLetter(msg.key, msg.value, body, headers))
