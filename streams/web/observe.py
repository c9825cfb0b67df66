"""What the operator surface knows about a running worker, read without touching the agent.

Two sources, both read-only for the topology:

- :class:`FlowSensor`, a Faust sensor (``app.sensors.add``; Faust calls it from the consumer
  and the stream loop): messages in by topic and partition, the wall time of the last one,
  the time each message spends in the ingest agent (``on_stream_event_in``, when it enters
  the stream, to ``on_stream_event_out``, when its batch is acked: the wait for the batch,
  decode, engine, delivery of the changes, table flush), and dead
  letters by stage, seen as they are sent (the ``dlq.stage`` header of every record sent to a
  ``*.dlq`` topic).
- :class:`Observer`, which folds the per-partition engine counters (``Engine.counters``:
  ``type:<event type>``, ``entered:<segment>``, ``exited:<segment>``, ``late_events``,
  ``duplicates`` ...) into monotonic per-process totals. Engine counters are restored with
  the partition (``import_meta``) and leave with it on a rebalance, so they are not usable as
  Prometheus counters as they are; the observer counts only what changed while this process
  held the partition. It takes the partition's restored counters (``Topology.meta``,
  exactly what the runtime restores) as the baseline when the first message of a
  newly assigned partition arrives, and folds the differences whenever it is polled (every
  sample, every scrape, every view) and when a rebalance starts (before the runtimes go).

Everything here runs on the worker's event loop, in the same thread as the agent: no locks.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from faust.sensors import Sensor
from faust.streams import _current_event as _CURRENT_EVENT  # read by faust's current_event()
from faust.types import TP

# at import, with the worker's start: it imports the online models (River, about a second),
# which a first call from a view would do on the event loop while events wait
from streams.web.modelstats import model_report

__all__ = ["FlowSensor", "Observer", "PartitionFlow", "LATENCY_BUCKETS"]

#: seconds; the agent's time per message is usually well under a millisecond, a delivery
#: wait on a slow broker tens of milliseconds
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class PartitionFlow:
    messages: int = 0
    last_message_wall: float | None = None     # when this process received the last one
    last_record_time: float | None = None      # the Kafka record timestamp of the last one


@dataclass
class _Seen:
    runtime: Any
    engine: Any
    counters: dict[str, int] = field(default_factory=dict)


class FlowSensor(Sensor):
    """Counts what flows through this worker (see the module docstring)."""

    #: bound on the messages in flight remembered (events dropped by a rebalance are never
    #: acked here)
    MAX_IN_FLIGHT = 100_000

    def __init__(self, observer: Observer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.observer = observer
        # when each message in flight entered the stream: the batched agent's acks
        # (``Stream.ack`` after a flush, streams/agents.py) call on_stream_event_out
        # without the state that on_stream_event_in returned
        self._entered: dict[tuple[TP, int], float] = {}

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        obs = self.observer
        if tp.topic not in obs.source_topics:
            return
        obs.messages_by_topic[tp.topic] += 1
        flow = obs.partitions.get(tp.partition)
        if flow is None:
            flow = obs.partitions[tp.partition] = PartitionFlow()
        flow.messages += 1
        flow.last_message_wall = time.time()
        ts = getattr(message, "timestamp", None)
        if isinstance(ts, (int, float)) and ts > 0:
            flow.last_record_time = float(ts)

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> Any:
        obs = self.observer
        if tp.topic not in obs.source_topics:
            return None
        obs.before_message(tp.partition, event)
        now = time.perf_counter()
        entered = self._entered
        if len(entered) >= self.MAX_IN_FLIGHT:
            entered.clear()
        entered[(tp, offset)] = now
        return now

    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        started = self._entered.pop((tp, offset), None)
        if state is None:
            state = started
        if state is None:
            return
        self.observer.observe_latency(time.perf_counter() - state)

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> Any:
        obs = self.observer
        source = obs.dlq_topics.get(topic)
        if source is None:
            return None
        stage = "unknown"
        for k, v in (getattr(message, "headers", None) or ()):
            if k == "dlq.stage":
                stage = (v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray))
                         else str(v))[:64]
                break
        obs.dead_letters[(source, stage)] += 1
        obs.last_dead_letter_wall = time.time()
        return None

    def on_rebalance_start(self, app: Any) -> dict:
        self.observer.poll()
        self.observer.rebalances += 1
        return super().on_rebalance_start(app)


class Observer:
    """Per-process totals of one worker's topology (see the module docstring).

    ``topology`` is a :class:`streams.agents.Topology` (or anything with ``runtimes``,
    ``input_names``, ``clock_name``, ``dlq`` and ``meta``)."""

    def __init__(self, topology: Any, histogram: Any = None) -> None:
        self.topology = topology
        self.source_topics = frozenset([*topology.input_names, topology.clock_name])
        self.dlq_topics = {t.get_topic_name() if hasattr(t, "get_topic_name") else str(t): src
                           for src, t in topology.dlq.items()}
        self.histogram = histogram       # prometheus Histogram (or None)
        self.started_at = time.time()
        self.messages_by_topic: Counter[str] = Counter()
        self.partitions: dict[int, PartitionFlow] = {}
        self.dead_letters: Counter[tuple[str, str]] = Counter()   # (source topic, stage)
        self.last_dead_letter_wall: float | None = None
        self.events_by_type: Counter[str] = Counter()
        self.segment_changes: Counter[tuple[str, str]] = Counter()  # (segment, change)
        self.other: Counter[str] = Counter()
        self.rebalances = 0
        self.latency_count = 0
        self.latency_sum = 0.0
        self._seen: dict[int, _Seen] = {}
        self._baseline: dict[int, dict[str, int]] = {}

    # -- hooks ---------------------------------------------------------------------------
    def before_message(self, partition: int, event: Any = None) -> None:
        """Before a message of ``partition`` enters the agent: when the partition has no
        runtime yet, the one about to be built restores its counters from the
        partition meta (``Topology.meta``); remember them as the baseline.

        The read runs with ``event`` as Faust's current event (Faust sets it right after
        this sensor call): the RocksDB store reads the database of the current event's
        partition, and the previous event may belong to another partition."""
        topo = self.topology
        if partition in topo.runtimes or partition in self._baseline:
            return
        base: dict[str, int] = {}
        token = None
        try:
            if event is not None:
                token = _CURRENT_EVENT.set(weakref.ref(event))
            meta = topo.meta.get(partition)
            if isinstance(meta, dict):
                base = {k: int(v) for k, v in (meta.get("counters") or {}).items()}
        except Exception:  # noqa: BLE001 - no baseline: the first poll takes one
            base = {}
        finally:
            if token is not None:
                _CURRENT_EVENT.reset(token)
        self._baseline[partition] = base

    def observe_latency(self, seconds: float) -> None:
        self.latency_count += 1
        self.latency_sum += seconds
        if self.histogram is not None:
            self.histogram.observe(seconds)

    # -- folding -------------------------------------------------------------------------
    def poll(self) -> None:
        """Fold what the engines counted since the last poll into the process totals."""
        runtimes = dict(self.topology.runtimes)
        for p in [p for p in self._seen if p not in runtimes]:
            del self._seen[p]
        for p, rt in runtimes.items():
            engine = rt.processor.engine
            counters = engine.counters
            seen = self._seen.get(p)
            if seen is None or seen.runtime is not rt or seen.engine is not engine:
                base = self._baseline.pop(p, None)
                if base is None:   # built before we were watching: count from now on
                    base = dict(counters)
                seen = self._seen[p] = _Seen(rt, engine, base)
            else:
                self._baseline.pop(p, None)
            last = seen.counters
            now = dict(counters)
            for k, v in now.items():
                d = v - last.get(k, 0)
                if d > 0:
                    self._fold(k, d)
            seen.counters = now

    def _fold(self, key: str, n: int) -> None:
        kind, _, name = key.partition(":")
        if kind == "type" and name:
            self.events_by_type[name] += n
        elif kind in ("entered", "exited") and name:
            self.segment_changes[(name, kind)] += n
        elif not name:
            self.other[key] += n

    # -- reads ---------------------------------------------------------------------------
    def engines(self) -> dict[int, Any]:
        return {p: rt.processor.engine for p, rt in sorted(self.topology.runtimes.items())}

    def segment_sizes(self) -> dict[str, int]:
        """Members per segment on this worker's partitions, from the engines' change
        counters (entered minus exited since each partition's first event)."""
        sizes: dict[str, int] = {name: 0 for name in self.topology.catalog.segments}
        for engine in self.engines().values():
            for k, v in engine.counters.items():
                kind, _, name = k.partition(":")
                if kind == "entered":
                    sizes[name] = sizes.get(name, 0) + v
                elif kind == "exited":
                    sizes[name] = sizes.get(name, 0) - v
        return sizes

    def hubs(self) -> dict[int, Any]:
        """``{partition: scorer}`` of this worker's engines (one ModelHub per partition;
        a hub shared by several partitions is listed once, under its first partition)."""
        out: dict[int, Any] = {}
        seen: set[int] = set()
        for p, engine in self.engines().items():
            s = getattr(engine, "scorer", None)
            if s is not None and id(s) not in seen:
                seen.add(id(s))
                out[p] = s
        return out

    def model_report(self) -> tuple[list[int], dict[str, Any] | None]:
        """``(partitions with a hub, streams.web.modelstats.model_report of the hubs)``;
        None when there is no hub. A topology whose engines are in another process (a split
        worker, streams/split.py) gives its own, as of its last refresh."""
        own = getattr(self.topology, "model_report", None)
        if callable(own):
            return own()
        hubs = self.hubs()
        return sorted(hubs), (model_report(hubs) if hubs else None)

    def lag(self, app: Any) -> dict[TP, int | None]:
        """Records not yet read per assigned input partition (highwater - next to read)."""
        out: dict[TP, int | None] = {}
        try:
            consumer = app.consumer
            assignment = consumer.assignment()
        except Exception:  # noqa: BLE001 - not started / rebalancing
            return out
        read = getattr(consumer, "_read_offset", {})
        committed = getattr(consumer, "_committed_offset", {})
        for tp in assignment:
            if tp.topic not in self.topology.input_names:
                continue
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001
                hw = None
            if hw is None or hw < 0:
                out[tp] = None
                continue
            pos = read.get(tp)
            if pos is not None:
                out[tp] = max(0, hw - (pos + 1))
                continue
            c = committed.get(tp)
            out[tp] = max(0, hw - c) if c is not None else hw
        return out

    def dead_letters_by_stage(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_src, stage), n in self.dead_letters.items():
            out[stage] += n
        return dict(out)
