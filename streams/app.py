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
from streams.settings import Settings

__all__ = ["Worker", "app", "create_app"]


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
    both fixes it lost nothing in 13 of 13 runs, and the fault test in 8 of 8."""
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
        return consumer

    cls._create_worker_consumer = _create_worker_consumer
    cls._retention_fetch_wait = True


def create_app(settings: Settings | None = None,
               register: Callable[[faust.App, Settings], object] | None = None) -> faust.App:
    """A new App for ``settings`` (default: from the environment) with the retention
    topology registered (or ``register(app, settings)`` instead, for probes and tests)."""
    settings = settings or Settings.from_env()
    if not settings.disable_faust_fixes:
        apply_faust_fixes()
    short_fetch_wait_on_embedded_broker()
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
