"""The consumers under test, one per process, chosen by ``$BENCH_KIND``:

``raw``       aiokafka ``getmany`` + ``orjson.loads`` of every value (this machine's limit)
``decode``    a Faust agent over the same topics that only ``orjson.loads`` each value
              (Faust's own per-event ceiling; same Faust settings as the worker)
``pipeline``  the real worker: ``streams.app.create_app`` with the production topology
              (batched ingest, contract, engine, segment changes, RocksDB table) and, unless
              ``RETENTION_MODELS=0``, the online models and the web views
              (``streams.web.worker.register``);
              ``batched`` is an alias (the batched prototype became the production agent)
``quix``      Quix Streams 3.28: decode + contract + a per-key state update (RocksDB and
              changelog), the same kind of per-key work in another framework

Each counts the input events it handles and writes ``{"kind", "n", "first", "last"}`` (wall
clock) to ``$BENCH_RESULT`` every 0.25 s (atomically), so several workers of one group can
be summed by the harness. Run: ``python -m bench._apps worker -l warning`` (Faust kinds) or
``python -m bench._apps`` (raw, quix).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KIND = os.environ.get("BENCH_KIND", "decode")
N = int(os.environ.get("BENCH_N", "0"))
RESULT = os.environ.get("BENCH_RESULT", "/dev/null")


class Counter:
    """Counts handled events; a daemon thread publishes the figures."""

    def __init__(self) -> None:
        self.n = 0
        self.first: float | None = None
        self.last: float | None = None
        self.extra: dict[str, Any] = {}
        threading.Thread(target=self._publish_loop, daemon=True).start()

    def tick(self, k: int = 1) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.n += k

    def publish(self) -> None:
        if self.first is None:
            return
        doc = {"kind": KIND, "pid": os.getpid(), "n": self.n, "first": self.first,
               "last": self.last, **self.extra}
        tmp = RESULT + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(doc))
        os.replace(tmp, RESULT)

    def _publish_loop(self) -> None:
        while True:
            time.sleep(0.25)
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - best effort
                pass


COUNT = Counter()


def _settings() -> Any:
    from streams.settings import Settings

    return Settings.from_env()


def input_topics(settings: Any) -> list[str]:
    from streams import topics as T

    return [settings.topic(t) for t in T.INPUT_TOPICS]


# --------------------------------------------------------------------------- raw aiokafka
async def run_raw() -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    s = _settings()
    c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap_list, group_id=None,
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in input_topics(s) for p in range(s.partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        loads = orjson.loads
        while N <= 0 or COUNT.n < N:
            batches = await c.getmany(timeout_ms=200, max_records=10_000)
            if batches and COUNT.first is None:
                COUNT.first = time.time()      # the clock starts when the first fetch arrives
            for recs in batches.values():
                for r in recs:
                    loads(r.value)
                COUNT.tick(len(recs))
    finally:
        COUNT.publish()
        await c.stop()


# --------------------------------------------------------------------------- Faust
def build_decode() -> Any:
    import faust

    from streams.app import create_app

    s = _settings()

    def register(app: faust.App, settings: Any) -> Any:
        src = app.topic(*input_topics(settings), key_type=bytes, value_type=bytes,
                        key_serializer="raw", value_serializer="raw",
                        partitions=settings.partitions)

        @app.agent(src, name="decode", concurrency=1)
        async def decode(stream: faust.StreamT) -> None:
            loads = orjson.loads
            async for event in stream.events():
                loads(event.message.value)
                COUNT.tick()

        return src

    return create_app(s.replace(store="memory://"), register=register)


def build_pipeline() -> Any:
    """The production worker (``streams.agents``: batched ingest), counting the input
    events of every batch it finishes (a split worker: every batch its child answered)."""
    from streams.app import create_app

    s = _settings()
    register = None
    if s.models:            # --no-scoring: neither the models nor the web views
        try:
            from streams.web.worker import register as full_register

            register = full_register
        except ImportError:
            register = None
    app = create_app(s, register=register)
    topo = app.retention_topology
    clock = topo.clock_name
    if hasattr(topo, "_on_results"):
        # a split worker's batch returns once shipped: count its events when the child's
        # answers for them are handled (up to two batch sizes are in flight)
        answered = topo._on_results

        async def counted_answers(messages: list[Any], *rest: Any) -> None:
            await answered(messages, *rest)
            COUNT.tick(sum(1 for msg, _ in messages if msg.topic != clock))

        topo._on_results = counted_answers  # type: ignore[method-assign]
    else:
        inner = topo.on_batch

        async def counted(events: list[Any]) -> None:
            await inner(events)
            COUNT.tick(sum(1 for ev in events if ev.message.topic != clock))

        topo.on_batch = counted  # type: ignore[method-assign]
    topo.run_as_worker_process()          # as python -m streams worker (gc tuning)
    watch(topo)
    return app


def watch(topo: Any) -> None:
    """Publish the topology's counters with the figures (changes, table writes)."""
    def stats() -> None:
        while True:
            time.sleep(1.0)
            try:
                st = dict(topo.stats)
                rts = list(topo.runtimes.values())
                st["processed_engine"] = sum(getattr(rt.processor, "processed", 0)
                                             for rt in rts)
                st["changes_engine"] = sum(rt.processor.engine.counters.get("changes", 0)
                                           for rt in rts)
                COUNT.extra["stats"] = st
                COUNT.extra["table_writes"] = (
                    sum(getattr(rt.store, "writes", 0) for rt in rts)
                    or st.get("table_writes", 0))       # a split worker counts its own
            except Exception:  # noqa: BLE001
                pass

    threading.Thread(target=stats, daemon=True).start()


# --------------------------------------------------------------------------- Quix Streams
def run_quix() -> None:
    from quixstreams import Application

    from models.contract import ContractError, parse_event

    s = _settings()
    app = Application(broker_address=",".join(s.bootstrap_list),
                      consumer_group=f"{s.app_id}-quix", auto_offset_reset="earliest",
                      state_dir=str(Path(s.data_dir) / "quix-state"),
                      consumer_extra_config={"session.timeout.ms": 6000,
                                             "heartbeat.interval.ms": 1000},
                      use_changelog_topics=True, loglevel="WARNING")
    topics = [app.topic(t, value_deserializer="bytes", key_deserializer="bytes")
              for t in input_topics(s)]
    done = threading.Event()

    def update(value: bytes, state: Any) -> None:
        try:
            ev = parse_event(value)
        except ContractError:
            COUNT.tick()
            return
        prof = state.get("p") or {"events": 0, "orders": 0, "revenue": 0.0, "last": None,
                                  "types": {}}
        prof["events"] += 1
        kind = ev["type"]
        prof["types"][kind] = prof["types"].get(kind, 0) + 1
        if kind == "order_completed":
            prof["orders"] += 1
            prof["revenue"] += float(ev["total"])
        prof["last"] = ev["occurred_at"]
        state.set("p", prof)
        COUNT.tick()
        if N > 0 and COUNT.n >= N and not done.is_set():
            done.set()
            COUNT.publish()
            app.stop()

    for topic in topics:
        sdf = app.dataframe(topic)
        sdf.update(update, stateful=True)
    app.run()
    COUNT.publish()


# --------------------------------------------------------------------------- entry
app: Any = None
if KIND == "decode":
    app = build_decode()
elif KIND in ("pipeline", "batched"):   # "batched": the former prototype, now production
    app = build_pipeline()

if __name__ == "__main__":
    if KIND == "raw":
        asyncio.run(run_raw())
    elif KIND == "quix":
        run_quix()
    else:
        app.main()
