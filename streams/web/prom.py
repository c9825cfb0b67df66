"""Prometheus metrics of one worker (text exposition format at ``GET /metrics``).

One :class:`~prometheus_client.CollectorRegistry` per App (not the global one: tests run
several Apps in one process). Counters are per process and monotonic (they restart at zero
with the process, which Prometheus' ``rate()`` handles); gauges are read at scrape time.

=====================================================  =======  =============================
name                                                   type     labels
=====================================================  =======  =============================
``retention_messages_total``                           counter  ``topic``
``retention_events_total``                             counter  ``type``
``retention_dead_letters_total``                       counter  ``topic``, ``stage``
``retention_segment_changes_total``                    counter  ``segment``, ``change``
``retention_engine_events_total``                      counter  ``kind`` (late, duplicate ...)
``retention_processing_seconds``                       histog.  (one message: stream in to acked after its flush)
``retention_consumer_lag_records``                     gauge    ``topic``, ``partition``
``retention_watermark_seconds``                        gauge    ``partition`` (event time, epoch)
``retention_last_event_time_seconds``                  gauge    ``partition`` (max event time)
``retention_last_message_received_seconds``            gauge    ``partition`` (wall clock, epoch)
``retention_segment_members``                          gauge    ``segment``
``retention_model_auc``                                gauge    ``model``
``retention_model_rolling_auc``                        gauge    ``model``
``retention_model_log_loss``                           gauge    ``model``
``retention_model_labels``                             gauge    ``model``
``retention_model_drifts``                             gauge    ``model``
``retention_assigned_partitions``                      gauge
``retention_worker_ready``                             gauge    (1 ready, 0 not)
``retention_gc_frozen_objects``                        gauge    (``gc.freeze()`` at the first batch)
``retention_info``                                     gauge    ``app_version``, ``definition_version``
``process_*`` (CPU seconds, resident memory, open fds)  mixed    (prometheus_client's own)
``python_gc_collections_total`` and ``python_gc_*``     counter  ``generation``
=====================================================  =======  =============================
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (CollectorRegistry, GCCollector, Histogram, ProcessCollector,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.web.observe import LATENCY_BUCKETS, Observer

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_MODEL_FIELDS = (("auc", "retention_model_auc", "ROC AUC of the model on the labels so far"),
                 ("rolling_auc", "retention_model_rolling_auc",
                  "ROC AUC of the model over its last labels"),
                 ("log_loss", "retention_model_log_loss", "Log loss on the labels so far"),
                 ("labels", "retention_model_labels", "Labels the model was measured on"),
                 ("drifts", "retention_model_drifts", "Drifts flagged by ADWIN"))


def model_summaries(observer: Observer) -> dict[str, dict[str, Any]]:
    """``{model name: live metrics}`` over this worker's model hubs, added up
    (``streams.web.modelstats``)."""
    report = observer.model_report()[1]
    return {name: m for name, m in (report or {}).get("models", {}).items() if "labels" in m}


def _counter(name: str, doc: str, labels: list[str], counts: dict) -> CounterMetricFamily:
    """A counter family from ``counts`` (label value, or a tuple of them, -> count), sorted."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


class _Collector:
    def __init__(self, observer: Observer, app: Any, ready: Callable[[], bool],
                 info: Callable[[], dict[str, str]]) -> None:
        self.observer = observer
        self.app = app
        self.ready = ready
        self.info = info

    def collect(self) -> Iterator[Any]:
        obs = self.observer
        obs.poll()
        yield _counter("retention_messages", "Messages read from the input and clock topics",
                       ["topic"], obs.messages_by_topic)
        yield _counter("retention_events", "Events applied by the engine, by type", ["type"],
                       obs.events_by_type)
        yield _counter("retention_dead_letters", "Messages sent to a dead-letter topic, by "
                       "source topic and stage", ["topic", "stage"], obs.dead_letters)
        yield _counter("retention_segment_changes", "Segment entries and exits",
                       ["segment", "change"], obs.segment_changes)
        yield _counter("retention_engine_events", "Other engine counts (late events, "
                       "duplicates, timers fired, erasures ...)", ["kind"], obs.other)
        g = GaugeMetricFamily("retention_consumer_lag_records", "Records not yet read",
                              labels=["topic", "partition"])
        for tp, lag in sorted(obs.lag(self.app).items()):
            if lag is not None:
                g.add_metric([tp.topic, str(tp.partition)], lag)
        yield g
        wm = GaugeMetricFamily("retention_watermark_seconds", "Event-time watermark of the "
                               "partition (epoch seconds)", labels=["partition"])
        last = GaugeMetricFamily("retention_last_event_time_seconds", "Largest event time "
                                 "seen on the partition (epoch seconds)", labels=["partition"])
        for p, engine in obs.engines().items():
            if engine.clock.watermark is not None:
                wm.add_metric([str(p)], engine.clock.watermark)
            if engine.clock.max_seen is not None:
                last.add_metric([str(p)], engine.clock.max_seen)
        yield wm
        yield last
        g = GaugeMetricFamily("retention_last_message_received_seconds", "Wall time this "
                              "worker received the partition's last message (epoch seconds)",
                              labels=["partition"])
        for p, flow in sorted(obs.partitions.items()):
            if flow.last_message_wall is not None:
                g.add_metric([str(p)], flow.last_message_wall)
        yield g
        g = GaugeMetricFamily("retention_segment_members", "Members per segment on this "
                              "worker's partitions", labels=["segment"])
        for seg, n in sorted(obs.segment_sizes().items()):
            g.add_metric([seg], n)
        yield g
        models = model_summaries(obs)
        for key, name, doc in _MODEL_FIELDS:
            g = GaugeMetricFamily(name, doc, labels=["model"])
            for model, m in sorted(models.items()):
                v = m.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    g.add_metric([model], v)
            yield g
        yield GaugeMetricFamily("retention_assigned_partitions", "Partitions this worker "
                                "runs an engine for", value=len(obs.topology.runtimes))
        yield GaugeMetricFamily("retention_worker_ready", "1 when the worker is ready",
                                value=1 if self.ready() else 0)
        yield GaugeMetricFamily("retention_gc_frozen_objects", "Objects moved out of the "
                                "garbage collector's reach at the first batch "
                                "(streams/gc_tuning.py)", value=gc.get_freeze_count())
        info = self.info()
        g = GaugeMetricFamily("retention_info", "Versions of this worker",
                              labels=sorted(info))
        g.add_metric([info[k] for k in sorted(info)], 1)
        yield g


class Metrics:
    """The registry of one worker: the processing histogram (observed by the sensor) and a
    collector that reads everything else at scrape time."""

    def __init__(self, observer: Observer, app: Any, ready: Callable[[], bool],
                 info: Callable[[], dict[str, str]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.processing = Histogram("retention_processing_seconds",
                                    "Time one message spends in the ingest agent (decode, "
                                    "engine, delivery of its changes, table write)",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        observer.histogram = self.processing
        self.registry.register(_Collector(observer, app, ready, info))  # type: ignore[arg-type]
        # the process (CPU, resident memory, open files) and its garbage collector
        # (collections per generation; see streams/gc_tuning.py), as prometheus_client
        # names them in its default registry
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
