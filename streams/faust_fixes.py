"""Deliberate fixes to faust-streaming 0.15.3, applied when the App is created.

Rebalance data-loss race (faust-streaming issue 596,
https://github.com/faust-streaming/faust/issues/596)
======================================================================================

When a worker that is *already running* goes through a rebalance,
``faust.tables.recovery.Recovery.on_recovery_completed`` (and ``_resume_streams`` on the
path without tables) does, in this order:

1. ``consumer.resume_partitions(assignment)``
2. ``await consumer.perform_seek()``   (an OffsetFetch round trip, tens of ms)
3. ``app.flow_control.resume()``       (mode-streaming 0.7.1: empties every flow-controlled
   queue)

During the ``await`` in step 2 the fetcher is running and the partitions are already
resumed, so records that aiokafka prefetched (Faust's pause only filters what it hands on)
are put into the stream queues -- and step 3 throws them away. They are never re-read:
the seek rewinds aiokafka to the committed offset, but the old ``getmany`` generator still
yields its pre-seek records and moves Faust's read offset to the end of that fetch, so the
re-fetched copies are dropped as "already read" (``DROPPED MESSAGE ROFF`` in the debug log).
Measured on the embedded broker: the number of lost events equalled the queue length at the
clear (27 to 251 per rebalance). A single worker never loses (its fetcher starts only after
this code ran); two workers in one group do, on Apache Kafka too.

The fix: seek *first* (while the partitions are still paused, so nothing for them can be
queued), then ``resume_partitions``, ``completed.set()``, ``flow_control.resume()`` and
``consumer.resume_flow()`` one after another with no ``await`` in between, so that nothing
can be queued and then cleared. Everything else is unchanged from 0.15.3.

The fixed order is used only from a worker's second recovery on (a rebalance of a worker
that was already processing: the only case with the race). The first recovery after a
start keeps upstream's order: with the fixed order there, restarted workers were seen
(about 1 restart in 5) never to consume some of their partitions.

The regression test is ``tests/test_streams_rebalance.py`` (two worker processes, one is
SIGTERMed mid-stream, every event is counted). Remove this module only when an upstream
release fixes the race *and* that test passes without it.
"""

from __future__ import annotations

import logging
from typing import Any, cast

__all__ = ["FIXED_VERSION", "apply_faust_fixes", "fixes_applied"]

log = logging.getLogger(__name__)

#: the faust-streaming version these patches were written against
FIXED_VERSION = "0.15.3"

_applied = False


def _first_recovery(recovery: Any) -> bool:
    """True on the worker's first recovery after it started (then mark it done): the race
    needs a worker that was already processing, so the first one keeps upstream's order."""
    first = not getattr(recovery, "_retention_recovered_once", False)
    recovery._retention_recovered_once = True
    return first


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """``Recovery._resume_streams`` with the seek before the resume (issue 596)."""
    if _first_recovery(self):
        return await _resume_streams.__wrapped_original__(self, generation_id)  # type: ignore[attr-defined]
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    stream_tps = {tp for tp in assignment if not self._is_changelog_tp(tp)}
    if assignment:
        # FIX: seek while the partitions are still paused ...
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
    else:
        self.log.info("Resuming streams with empty assignment")
    # ... then resume everything with no await in between.
    if stream_tps:
        consumer.resume_partitions(stream_tps)
    self.completed.set()
    self.log.info("Resuming flow...")
    app.flow_control.resume()
    consumer.resume_flow()
    # finally make sure the fetcher is running.
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """``Recovery.on_recovery_completed`` with the seek before the resume (issue 596)."""
    import asyncio

    if _first_recovery(self):
        return await _on_recovery_completed.__wrapped_original__(self, generation_id)  # type: ignore[attr-defined]

    consumer = self.app.consumer
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callback_coros = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table],
                self.standbys_for_table[table],
            )
        )
        for table in self.tables.values()
    ]
    if callback_coros:
        await asyncio.wait(callback_coros)
    assignment = consumer.assignment()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id "
            f"{self.app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        # FIX: seek while the stream partitions are still paused ...
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again (after seek)")
            return
    # ... then resume everything with no await in between.
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.log.dev("Resume stream partitions")
    self.app.flow_control.resume()
    consumer.resume_flow()
    # finally make sure the fetcher is running.
    await cast(Any, self.app)._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


def apply_faust_fixes(strict: bool = True) -> None:
    """Patch faust's ``Recovery`` (idempotent). Refuses other faust versions when ``strict``:
    the patched methods are copies of 0.15.3's and must be re-checked on an upgrade."""
    global _applied
    if _applied:
        return
    import faust
    from faust.tables.recovery import Recovery

    if faust.__version__ != FIXED_VERSION:
        msg = (f"streams.faust_fixes was written for faust-streaming {FIXED_VERSION}, found "
               f"{faust.__version__}: re-check faust issue 596 and tests/test_streams_rebalance.py")
        if strict:
            raise RuntimeError(msg)
        log.warning(msg)
    for name, fn in (("on_recovery_completed", _on_recovery_completed),
                     ("_resume_streams", _resume_streams)):
        original = getattr(Recovery, name)
        fn.__wrapped_original__ = original  # type: ignore[attr-defined]
        setattr(Recovery, name, fn)
    _applied = True


def fixes_applied() -> bool:
    return _applied
