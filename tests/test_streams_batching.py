"""Natural batching (``streams.batching.take_ready``) on a real Faust stream over an
in-memory channel (no broker: the stream, its passive drainer and acks are Faust's own)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import pytest

from streams.batching import take_ready

pytestmark = pytest.mark.timeout(60)


def _app(name: str) -> faust.App:
    app = faust.App(name, broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    app.finalize()
    app.flow_control.resume()      # as after a worker's first assignment
    return app


async def _run(values_then: list[tuple[float, list[int]]], until: float, **kwargs: Any):
    """Send each group of values after its delay (seconds from the start); collect the
    batches take_ready yields (values and time since the start) and the acks."""
    app = _app(f"take-{id(values_then)}")
    channel = app.channel()
    stream = app.stream(channel)
    batches: list[tuple[list[int], float]] = []
    acked: list[int] = []
    idle: list[float] = []
    own_acks = not kwargs.get("ack", True)
    kept: list[Any] = []

    async with stream:
        real_ack = stream.ack

        async def ack(event: Any) -> bool:
            acked.append(event.value)
            return await real_ack(event)

        stream.ack = ack  # type: ignore[method-assign]
        t0 = time.monotonic()

        async def on_idle() -> None:
            idle.append(time.monotonic() - t0)
            if own_acks:                      # a consumer that acks later, when idle
                while kept:
                    await stream.ack(kept.pop(0))

        async def consume() -> None:
            async for batch in take_ready(stream, on_idle=on_idle, **kwargs):
                batches.append(([e.value for e in batch], time.monotonic() - t0))
                if own_acks:
                    kept.extend(batch)

        task = asyncio.ensure_future(consume())
        for delay, values in values_then:
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - t0)))
            for v in values:
                await channel.send(value=v)
        await asyncio.sleep(max(0.0, until - (time.monotonic() - t0)))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return batches, acked, idle


def test_a_batch_is_what_has_arrived_without_waiting_for_more():
    batches, acked, _ = asyncio.run(_run([(0.05, list(range(7))), (0.6, [99])], until=1.0,
                                         max_=3, within=5.0))
    assert [b for b, _ in batches] == [[0, 1, 2], [3, 4, 5], [6], [99]]
    # the partial batches did not wait the 5 s of ``within``
    assert batches[2][1] < 0.5 and 0.6 <= batches[3][1] < 0.9, batches
    assert acked == [0, 1, 2, 3, 4, 5, 6, 99]          # each after its batch's body


def test_with_a_backlog_on_the_broker_a_partial_batch_waits_to_fill_up():
    batches, _, _ = asyncio.run(_run([(0.05, list(range(7)))], until=1.0, max_=5,
                                     within=0.4, backlog=lambda: True))
    assert [b for b, _ in batches] == [[0, 1, 2, 3, 4], [5, 6]]
    assert batches[0][1] < 0.3                          # full: at once
    assert batches[1][1] >= 0.4, batches                # partial: after ``within``


def test_the_consumer_can_own_the_acks_and_finish_when_idle():
    batches, acked, idle = asyncio.run(_run([(0.05, [1, 2]), (0.1, [3])], until=0.8,
                                            max_=10, within=0.2, ack=False))
    assert sorted(v for b, _ in batches for v in b) == [1, 2, 3]
    # nothing acked by take_ready itself; the consumer acked them when idle, in order
    assert acked == [1, 2, 3]
    assert idle and idle[0] >= 0.2, idle
