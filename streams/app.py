"""Build the Faust App from :class:`streams.settings.Settings`.

``streams.app.app`` is the App built from the environment, with the topics, tables and
agents registered on it (built on first access); nothing connects to a broker until a
worker starts. The
faust-streaming rebalance fix (``streams.faust_fixes``, faust issue 596) is applied here,
deliberately, before any App exists.

Processing guarantee: at-least-once (exactly-once is broken in faust-streaming 0.15.x and
cannot be tested on the embedded broker). Duplicates are absorbed by the per-customer
source positions and event-id dedupe, outputs carry deterministic ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust

from streams.faust_fixes import apply_faust_fixes
from streams.faust_speedups import apply_faust_speedups
from streams.embedded_offsets import patch_highwaters_on_embedded_broker
from streams.gc_tuning import apply_thresholds as apply_gc_thresholds
from streams.settings import Settings

__all__ = ["Worker", "adaptive_fetch_wait", "app", "create_app"]

log = logging.getLogger(__name__)


class Worker(faust.Worker):
    """Faust's worker without its terminal spinner when the output is not a terminal.

    With ``-l warn`` (or higher) Faust adds a spinner handler to the root logger and sets the
    root level to DEBUG (``faust.Worker._setup_spinner_handler``), so that the spinner turns
    on every record. Then every ``log.debug`` in aiokafka and Faust (several per message
    produced) builds a LogRecord that no handler prints: about 6 % of a busy worker's CPU
    in the pipeline benchmark (py-spy). A spinner is only useful on a terminal."""

    def _setup_spinner_handler(self, logger: logging.Logger, level: int) -> None:
        isatty = getattr(self.stdout, "isatty", None)
        if self.spinner and callable(isatty) and isatty():
            super()._setup_spinner_handler(logger, level)
        else:
            self.spinner = None


#: the worker consumer's fetch wait on the embedded broker (milliseconds), see below
EMBEDDED_FETCH_WAIT_MS = 25
#: the longest it grows to while the broker answers a backlog with nothing (Faust's own wait)
EMBEDDED_FETCH_WAIT_MAX_MS = 1500
#: records past the fetch offset that make an empty answer a "backlog answered with nothing";
#: fewer is the tail (records that arrived while the broker answered)
EMBEDDED_FETCH_BEHIND = 200


def short_fetch_wait_on_embedded_broker() -> None:
    """On the embedded broker, the worker's consumer asks for at most
    ``EMBEDDED_FETCH_WAIT_MS`` of fetch long-poll instead of Faust's hard-coded 1,500 ms.

    Tansu holds a fetch for its whole wait even when records arrive meanwhile (an aiokafka
    consumer with ``fetch_max_wait_ms=1500`` saw records 485 ms late at the median, 3 ms
    with 10 ms), which alone put a floor of about half a second under the end-to-end
    latency. Apache Kafka answers a fetch as soon as data is there, so nothing changes
    elsewhere: the wrapper only acts when the App's settings say ``embedded_broker``.

    It relies on ``streams.faust_fixes``: a faster fetcher makes a pending fetch much more
    likely to meet the moment a recovery empties the set of active partitions (the second
    fix there). With the 25 ms wait and that fix disabled, the two-worker rebalance test
    lost the whole tail of one partition in 2 of 5 runs (1,980 and 1,665 records; the same
    signature as the 3 of 6 lossy runs that made us revert this wait before the fix); with
    both fixes it lost nothing in 13 of 13 runs, and the fault test in 8 of 8.

    The wait adapts (:func:`adaptive_fetch_wait`): Tansu answers a fetch with *no records*
    when listing the partition's stored batches takes longer than the fetch wait, and that
    listing grows with the partition (one batch per record from single-record producers).
    Past some tens of thousands of batches, a 25 ms wait got nothing from any offset, for
    ever: a worker with a backlog stalled (the "wedged input topic" of the long fault test).
    So an empty answer to a partition known to hold more (its high-water mark more than
    ``EMBEDDED_FETCH_BEHIND`` records past the fetch offset) doubles the wait, up to
    ``EMBEDDED_FETCH_WAIT_MAX_MS``; any answer at the tail (fewer behind) halves it again,
    down to ``EMBEDDED_FETCH_WAIT_MS``. (A first version doubled on any record behind: at the
    tail, records that arrive while Tansu answers made the wait ratchet up to 1,500 ms, and
    the latency benchmark's p50 went from tens of ms to 1.3-3 s.)"""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    if getattr(cls, "_retention_fetch_wait", False):
        return
    create = cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        settings = getattr(self.app, "retention_settings", None)
        if settings is not None and settings.embedded_broker:
            consumer._fetch_max_wait_ms = EMBEDDED_FETCH_WAIT_MS
            adaptive_fetch_wait(consumer, EMBEDDED_FETCH_WAIT_MS, EMBEDDED_FETCH_WAIT_MAX_MS)
        return consumer

    cls._create_worker_consumer = _create_worker_consumer
    cls._retention_fetch_wait = True


def adaptive_fetch_wait(consumer: Any, base_ms: int, max_ms: int) -> None:
    """Make ``consumer``'s (an ``AIOKafkaConsumer``, not started yet) fetch wait adapt between
    ``base_ms`` and ``max_ms``: doubled after a fetch that returned no record although a
    partition it asked for holds more than ``EMBEDDED_FETCH_BEHIND`` records past the fetch
    offset, halved after a fetch at the tail (see :func:`short_fetch_wait_on_embedded_broker`)."""
    from aiokafka.consumer.fetcher import Fetcher

    if not getattr(Fetcher, "_retention_adaptive", False):
        _patch_fetcher(Fetcher)
    start = consumer.start

    async def start_adaptive() -> None:
        await start()
        fetcher = consumer._fetcher
        fetcher._retention_wait_range = (base_ms, max_ms)
        fetcher._fetch_max_wait_ms = base_ms

    consumer.start = start_adaptive


def _patch_fetcher(fetcher_cls: Any) -> None:
    from aiokafka.structs import TopicPartition

    proc = fetcher_cls._proc_fetch_request

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        got = await proc(self, assignment, node_id, request)
        span = getattr(self, "_retention_wait_range", None)
        if span is None or not assignment.active:
            return got
        lag = 0                         # records the broker held past the fetch offsets
        for topic, partitions in request.topics:
            for partition, offset, *_ in partitions:
                state = assignment.state_value(TopicPartition(topic, partition))
                hw = getattr(state, "highwater", None)
                if hw is not None and hw - offset > lag:
                    lag = hw - offset
        wait = self._fetch_max_wait_ms
        if not got and lag > EMBEDDED_FETCH_BEHIND:
            new = min(wait * 2, span[1])     # a backlog answered with nothing
        elif lag <= EMBEDDED_FETCH_BEHIND:
            new = max(span[0], wait // 2)    # at the tail: back towards the short wait
        else:
            new = wait                       # records from a backlog: keep what worked
        if new != wait:
            self._fetch_max_wait_ms = new
            if new > wait or new == span[0]:
                log.info("fetch wait %d ms -> %d ms (%s)", wait, new,
                         "the broker answered a backlog with nothing" if new > wait
                         else "at the tail")
        return got

    fetcher_cls._proc_fetch_request = _proc_fetch_request
    fetcher_cls._retention_adaptive = True


def create_app(settings: Settings | None = None,
               register: Callable[[faust.App, Settings], object] | None = None) -> faust.App:
    """A new App for ``settings`` (default: from the environment) with the retention
    topology registered (or ``register(app, settings)`` instead, for probes and tests)."""
    settings = settings or Settings.from_env()
    if not settings.disable_faust_fixes:
        apply_faust_fixes()
    if settings.faust_fast_drain:
        apply_faust_speedups()
    short_fetch_wait_on_embedded_broker()
    patch_highwaters_on_embedded_broker()
    apply_gc_thresholds(settings.gc_thresholds)
    app = faust.App(settings.app_id, autodiscover=False, Worker=Worker,
                    **settings.faust_settings())
    app.retention_settings = settings  # type: ignore[attr-defined]
    if register is None:
        from streams.agents import register as register_topology

        register = register_topology
    app.retention_topology = register(app, settings)  # type: ignore[attr-defined]
    return app


_app: faust.App | None = None


def __getattr__(name: str) -> faust.App:
    """``streams.app.app``: the App from the environment, built on first access (so that
    importing :func:`create_app` builds nothing)."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
