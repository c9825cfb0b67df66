"""A faster hand-off from Faust's fetcher to its streams (faust-streaming 0.15.3).

Faust's read loop (``faust.transport.consumer.Consumer._drain_messages``) hands every
fetched record to the topic conductor with::

    await self.wait_first(callback(message), self.suspend_flow.wait())

so that a hand-off blocked on a full stream queue is abandoned when a rebalance suspends the
flow. ``Service.wait_first`` creates four tasks per record (the callback, the flow event and
the service's stopped and crashed events), waits for the first with ``asyncio.wait`` and
cancels the other three. Profiled (py-spy, a Faust agent that only decodes, 40,000 records):
``wait_first`` took 28 % of the main thread, the callback inside it 4 %. That is most of
Faust's own per-event ceiling of about 6,000-7,000 events/s on this machine.

The callback almost never waits: it takes an uncontended lock, checks the flow control and
the producer buffer and puts the event in the stream's queue with ``put_nowait``. Only a full
queue (or a suspended flow, or a producer buffer over its limit) makes it wait. So the patched
loop runs the callback's coroutine directly up to its first suspension; when it finishes
without one (the common case) no task is made. When it does suspend, the rest of it runs as
one task raced against ``suspend_flow`` by the same ``wait_first`` as before, so a blocked
hand-off is still abandoned on a rebalance, as in 0.15.3. Everything else in the loop is
0.15.3's code, unchanged.

Measured in ``bench/pipeline_throughput.py`` (kinds ``decode_fast`` with this patch,
``decode`` the stock loop; ``pipeline`` and ``pipeline_stock`` the worker on each): see
``docs/BENCHMARKS.md``. Turned off with ``RETENTION_FAUST_FAST_DRAIN=0``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

__all__ = ["apply_faust_speedups", "run_until_suspended"]

log = logging.getLogger(__name__)

#: the faust-streaming version the patched loop was copied from
FAST_DRAIN_VERSION = "0.15.3"

_applied = False


def run_until_suspended(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Step ``coro`` up to its first suspension in the current task.

    Returns ``(True, result)`` when it finished without waiting, else ``(False, rest)``
    where ``rest`` is a coroutine that goes on from there (await it, or make it a task).
    Exceptions raised before the first suspension propagate here.

    >>> async def quick():
    ...     return 42
    >>> run_until_suspended(quick())
    (True, 42)
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _resume(coro, yielded)


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Drive ``coro`` on, as an asyncio Task would, from the point where it yielded
    ``yielded`` (a future it waits for, or ``None`` for a bare yield)."""
    try:
        while True:
            if yielded is None:
                await asyncio.sleep(0)
            elif getattr(yielded, "_asyncio_future_blocking", None) is not None:
                yielded._asyncio_future_blocking = False
                # wait without taking its result: the coroutine takes it when resumed
                await asyncio.wait((yielded,))
            else:  # what asyncio.Task does with anything else
                raise RuntimeError(f"coroutine yielded {yielded!r}, not a future")
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value
    except asyncio.CancelledError:
        # cancelled while waiting (flow suspended, worker stopping): as Task.cancel does,
        # cancel what the coroutine waits for, then cancel the coroutine at its await point,
        # so that its finally blocks (locks) run
        if yielded is not None:
            yielded.cancel()
        try:
            coro.throw(asyncio.CancelledError())
        except (asyncio.CancelledError, StopIteration):
            pass
        else:
            coro.close()
        raise
    except BaseException:
        coro.close()
        raise


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - a worker loop
    # faust-streaming 0.15.3 Consumer._drain_messages (BSD-3-Clause); only the hand-off to
    # ``callback`` differs (marked below).
    from mode import Service

    from faust.transport.consumer import CONSUMER_FETCHING

    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        # --- changed: no tasks unless the hand-off has to wait
                        done, rest = run_until_suspended(callback(message))
                        if not done:
                            await self.wait_first(rest, self.suspend_flow.wait())
                        # --- end of change
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def apply_faust_speedups() -> None:
    """Patch ``faust.transport.consumer.Consumer._drain_messages`` (idempotent, process
    wide). Refuses other faust versions: the loop is a copy of 0.15.3's."""
    global _applied
    if _applied:
        return
    import faust
    from faust.transport.consumer import Consumer

    if faust.__version__ != FAST_DRAIN_VERSION:
        raise RuntimeError(f"streams.faust_speedups was written for faust-streaming "
                           f"{FAST_DRAIN_VERSION}, found {faust.__version__}: re-check "
                           "Consumer._drain_messages and remove or update the copy")
    _drain_messages.__wrapped_original__ = Consumer._drain_messages  # type: ignore[attr-defined]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    _applied = True
