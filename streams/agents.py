"""Topics, tables and the ingest agent of the retention topology.

One agent reads the three input topics and the clock topic (co-partitioned, so partition
*p* of all four belongs to the same customers and the same engine), with concurrency 1.
Per message it: hands the raw bytes to the partition's :class:`~streams.processor.
PartitionProcessor`; sends a dead letter, or sends the segment changes and waits for their
delivery; then writes the changed customers to the table. Only after that does Faust ack
the message, and Faust flushes its producer before it commits offsets, so a committed
offset always has its state and outputs on the broker (at-least-once; replays are skipped
exactly by the per-customer source positions in the state).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TP

from models.partitioning import partition_for
from streams import topics as T
from streams.processor import Message, PartitionProcessor
from streams.settings import APP_VERSION, Settings
from streams.state import PartitionMeta, TableStore, partition_keys

__all__ = ["Topology", "register"]

log = logging.getLogger(__name__)

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
       "value_serializer": "raw"}


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
        self.clock_name = name(T.CLOCK_TOPIC)
        self.source = app.topic(*self.input_names, self.clock_name, partitions=p, **RAW)
        self.clock = app.topic(self.clock_name, partitions=p, **RAW)
        self.dlq = {name(t): app.topic(name(T.dlq_topic(t)), partitions=p, **RAW)
                    for t in T.INPUT_TOPICS}
        self.changes = app.topic(name(T.SEGMENT_CHANGES), partitions=p, **RAW)
        self.segment_topics = {seg: app.topic(name(T.segment_topic(seg)), partitions=p, **RAW)
                               for seg in self.catalog.segments}
        self.customers = app.Table(T.TABLE_CUSTOMERS, partitions=p, key_type=bytes,
                                   value_type=None)
        # the partition's engine meta (clock, counters, store metrics) lives in the customers
        # table under a reserved key, written last in every flush: one ordered changelog
        # partition then holds states and clock, so a restore never pairs a clock with states
        # from another point of the stream
        self.meta = PartitionMeta(self.customers)
        self.models = app.Table(T.TABLE_MODELS, partitions=p, key_type=bytes, value_type=None)
        self._snapshot_key = settings.snapshot_key() if settings.models else b""
        self.runtimes: dict[int, Runtime] = {}
        self.stats: dict[str, int] = {"messages": 0, "processed": 0, "dead_lettered": 0,
                                      "skipped": 0, "changes": 0, "ticks": 0, "errors": 0}


    # -- runtimes --------------------------------------------------------------------
    def runtime(self, partition: int, first: tuple[str, int] | None = None) -> Runtime:
        """The partition's runtime, built (from the restored tables) on first use after an
        assignment. Must run inside the agent (table reads use the current event)."""
        rt = self.runtimes.get(partition)
        if rt is not None:
            return rt
        n = self.settings.partitions
        store = TableStore(self.customers,
                           keys=lambda: partition_keys(self.customers, partition, n),
                           owns=lambda key: partition_for(key, n) == partition)
        hub = self._load_hub(partition) if self.settings.models else None
        engine = self._engine_cls(self.engine_config, catalog=self.catalog, store=store,
                                  scorer=hub)
        keys = partition_keys(self.customers, partition, self.settings.partitions)
        meta = self.meta.get(str(partition).encode())
        if meta:
            engine.import_meta(meta)
        indexed = engine.rebuild_index(keys)
        engine.clear_dirty()
        store._trim()
        processor = PartitionProcessor(partition, engine, APP_VERSION,
                                       self.settings.max_message_bytes)
        rt = self.runtimes[partition] = Runtime(partition, processor, store)
        log.info("partition %d: engine ready, %d keys, %d timers, watermark %s", partition,
                 len(keys), indexed, engine.clock.watermark)
        return rt

    def _load_hub(self, partition: int) -> Any:
        """The partition's model hub: its last signed snapshot, or a new one. A snapshot whose
        signature does not check is refused (never unpickled) and logged."""
        import base64

        from models.scoring import HubConfig, ModelHub
        from models.scoring.hub import SnapshotError

        config = HubConfig(snapshot_key=self._snapshot_key,
                           session_timeout=self.engine_config.session_timeout)
        saved = self.models.get(str(partition).encode())
        if saved:
            try:
                hub = ModelHub.restore(base64.b64decode(saved["blob_b64"]), self._snapshot_key, config)
                log.info("partition %d: models restored (%s)", partition, hub.versions)
                return hub
            except (SnapshotError, KeyError, ValueError) as exc:
                log.error("partition %d: model snapshot refused (%s); starting new models",
                          partition, exc)
        return ModelHub(config)

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
        for p in partitions:
            self.runtimes.pop(p, None)

    def max_event_time(self) -> float | None:
        times = [rt.processor.engine.clock.max_seen for rt in self.runtimes.values()]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def caught_up(self, partition: int) -> bool:
        """No known backlog on the partition's input topics (a tick must not overtake it)."""
        consumer = self.app.consumer
        read = getattr(consumer, "_read_offset", {})
        for topic in self.input_names:
            tp = TP(topic, partition)
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - unknown: do not block time
                continue
            if hw is None or hw <= 0:
                continue
            pos = read.get(tp)
            if pos is None or hw - pos > 1:
                return False
        return True

    # -- per message -----------------------------------------------------------------
    async def on_message(self, msg: Any) -> None:
        """Everything for one consumed message. Never raises (except cancellation)."""
        self.stats["messages"] += 1
        try:
            rt = self.runtime(msg.partition, (msg.topic, msg.offset))
            rt.positions[msg.topic] = msg.offset
            if msg.topic == self.clock_name:
                await self._on_tick(rt, msg)
            else:
                await self._on_event(rt, msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never let an exception kill the agent
            self.stats["errors"] += 1
            log.exception("unexpected error at %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            if msg.topic in self.dlq:
                await self._dead_letter_unexpected(msg, exc)

    async def _dead_letter_unexpected(self, msg: Any, exc: Exception) -> None:
        """Dead-letter a message whose handling failed outside the engine (stage
        ``processing``), so that it is never acked without a trace."""
        from models.contract import SCHEMA_VERSION, dead_letter_record

        from streams.processor import dlq_headers

        try:
            m = Message(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                        tuple((k, bytes(v or b"")) for k, v in (msg.headers or ())))
            body = dead_letter_record(exc, msg.value, msg.key, source_topic=msg.topic,
                                      partition=msg.partition, offset=msg.offset,
                                      app_version=APP_VERSION, at=time.time(),
                                      max_value_bytes=self.settings.max_message_bytes)
            await self.dlq[msg.topic].send(
                key=msg.key, value=orjson.dumps(body), partition=msg.partition,
                headers=dlq_headers(m, body["stage"], body["error"], APP_VERSION,
                                    SCHEMA_VERSION))
            self.stats["dead_lettered"] += 1
        except Exception:  # noqa: BLE001
            log.exception("could not dead-letter %s[%s]@%s", msg.topic, msg.partition,
                          msg.offset)

    async def _on_event(self, rt: Runtime, msg: Any) -> None:
        headers = tuple((k, bytes(v) if v is not None else b"") for k, v in (msg.headers or ()))
        m = Message(msg.topic, msg.partition, msg.offset, msg.key, msg.value, headers,
                    msg.timestamp if msg.timestamp else None)
        proc = rt.processor
        outcome = proc.handle(m)
        engine = proc.engine
        if outcome.dead_letter is not None:
            rt.store.discard(engine.dirty_keys())  # a failed event leaves no state behind
            engine.clear_dirty()
            dl = outcome.dead_letter
            await self.dlq[msg.topic].send(key=dl.key, value=orjson.dumps(dl.body),
                                           partition=msg.partition, headers=dl.headers)
            self.stats["dead_lettered"] += 1
            return
        if outcome.skipped:
            self.stats["skipped"] += 1
        else:
            self.stats["processed"] += 1
        await self._deliver(outcome.outputs)
        self._flush(rt, last=outcome.key)

    async def _on_tick(self, rt: Runtime, msg: Any) -> None:
        try:
            at = float(orjson.loads(msg.value)["at"])
        except Exception:  # noqa: BLE001 - a bad tick is ignored
            log.warning("ignoring bad clock tick at %s@%s", msg.partition, msg.offset)
            return
        if not self.caught_up(rt.partition):
            return
        self.stats["ticks"] += 1
        try:
            outputs = rt.processor.tick(at)
        except Exception:  # noqa: BLE001
            log.exception("clock tick failed on partition %d", rt.partition)
            rt.store.discard(rt.processor.engine.dirty_keys())
            rt.processor.engine.clear_dirty()
            return
        await self._deliver(outputs)
        self._flush(rt, force_meta=True)

    async def _deliver(self, outputs: list[dict]) -> None:
        """Send the changes (and their per-segment copies) and wait until delivered."""
        if not outputs:
            return
        futures = []
        for change in outputs:
            key = change["customer_id"].encode("utf-8")
            body = orjson.dumps(change)
            futures.append(await self.changes.send(key=key, value=body))
            segments = ([change["segment"]] if change.get("segment")
                        else change.get("previous_segments", []))
            for name in segments:
                topic = self.segment_topics.get(name)
                if topic is not None:
                    futures.append(await topic.send(key=key, value=body))
        await asyncio.gather(*futures)
        self.stats["changes"] += len(outputs)

    def _flush(self, rt: Runtime, force_meta: bool = False, last: str | None = None) -> None:
        engine = rt.processor.engine
        dirty = engine.dirty_keys()
        if dirty:
            rt.store.flush(dirty, last=last)
            engine.clear_dirty()
        # after the states of this flush, in the same changelog partition (see PartitionMeta)
        self.meta[str(rt.partition).encode()] = engine.export_meta()
        self._snapshot_models(rt)

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
        return {"stats": dict(self.stats), "partitions": sorted(self.runtimes),
                "watermarks": {p: rt.processor.engine.clock.watermark
                               for p, rt in self.runtimes.items()},
                "segment_sizes_since_start": sizes}


def register(app: faust.App, settings: Settings) -> Topology:
    """Register the retention topology on ``app``."""
    topo = Topology(app, settings)

    @app.agent(topo.source, name="ingest", concurrency=1)
    async def ingest(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await topo.on_message(event.message)

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

    @app.page("/retention/summary/")
    async def summary(web: Any, request: Any) -> Any:
        return web.json(topo.summary())

    topo.agent = ingest  # type: ignore[attr-defined]
    from streams.web import register_views  # operator views and metrics: docs/OPERATORS.md

    register_views(app, topo, settings)
    return topo
