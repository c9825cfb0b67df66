"""The fast read loop (``streams/faust_speedups.py``): the hand-off runs the conductor's
coroutine in place, and only what waits becomes a task, raced against ``suspend_flow``.

The copy of faust-streaming 0.15.3's ``Consumer._drain_messages`` must differ from upstream
only in that hand-off (checked on the source, so an upgrade that changes the loop fails here).
The worker runs on the patched loop in every broker test of the suite (it is on by default),
among them the fault and rebalance tests that count every event.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import textwrap

import pytest
from faust.transport.consumer import Consumer

from streams import faust_speedups
from streams.faust_speedups import apply_faust_speedups, run_until_suspended


def test_a_coroutine_that_does_not_wait_finishes_in_place() -> None:
    calls = []

    async def hand_off(x: int) -> int:
        calls.append(x)
        return x * 2

    async def main() -> tuple[bool, int]:
        task_count = len(asyncio.all_tasks())
        done, result = run_until_suspended(hand_off(21))
        assert len(asyncio.all_tasks()) == task_count     # no task was made
        return done, result

    assert asyncio.run(main()) == (True, 42)
    assert calls == [21]


def test_a_coroutine_that_waits_goes_on_in_the_rest() -> None:
    async def hand_off(fut: asyncio.Future, log: list) -> str:
        log.append("before")
        await asyncio.sleep(0)               # a bare yield
        got = await fut                      # a real wait
        log.append(got)
        return "done"

    async def main() -> tuple[bool, str, list]:
        log: list = []
        fut = asyncio.get_running_loop().create_future()
        done, rest = run_until_suspended(hand_off(fut, log))
        assert not done and log == ["before"]
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        assert not task.done()
        fut.set_result("value")
        return done, await task, log

    assert asyncio.run(main()) == (False, "done", ["before", "value"])


def test_errors_reach_the_caller_before_and_after_the_first_wait() -> None:
    async def fails_at_once() -> None:
        raise ValueError("bad record")

    async def fails_later(fut: asyncio.Future) -> None:
        await fut

    async def main() -> None:
        with pytest.raises(ValueError, match="bad record"):
            run_until_suspended(fails_at_once())
        fut = asyncio.get_running_loop().create_future()
        done, rest = run_until_suspended(fails_later(fut))
        assert not done
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0)
        fut.set_exception(KeyError("later"))
        with pytest.raises(KeyError):
            await task

    asyncio.run(main())


def test_abandoning_a_waiting_hand_off_releases_its_lock() -> None:
    """What ``wait_first(rest, suspend_flow.wait())`` does when the flow is suspended: the
    rest is cancelled, and the coroutine's ``async with lock`` must release the lock (the
    conductor's ``_tp_to_callback_lock``), or the next hand-off would deadlock."""
    async def main() -> None:
        lock = asyncio.Lock()
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait("full")
        cleaned = []

        async def hand_off() -> None:
            async with lock:
                try:
                    await queue.put("event")       # blocks: the queue is full
                finally:
                    cleaned.append(True)

        suspend = asyncio.Event()
        done, rest = run_until_suspended(hand_off())
        assert not done and lock.locked()
        suspend.set()
        waiters = [asyncio.ensure_future(rest), asyncio.ensure_future(suspend.wait())]
        finished, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for fut in pending:
            fut.cancel()
        await asyncio.sleep(0)
        assert cleaned == [True]
        assert not lock.locked()
        assert queue.qsize() == 1                  # the abandoned event was not put

    asyncio.run(main())


def test_the_copied_loop_differs_from_upstream_only_in_the_hand_off() -> None:
    apply_faust_speedups()
    upstream = Consumer._drain_messages.__wrapped_original__
    ours = faust_speedups._drain_messages
    assert Consumer._drain_messages is ours
    theirs = textwrap.dedent(inspect.getsource(upstream)).splitlines()
    mine = inspect.getsource(ours).splitlines()
    changed = [line for line in difflib.unified_diff(theirs, mine, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    removed = [line[1:].strip() for line in changed if line.startswith("-")]
    added = [line[1:].strip() for line in changed if line.startswith("+")]
    # the signature and upstream's comment on it
    assert removed[0].startswith("async def _drain_messages(self, fetcher: ServiceT)")
    assert all(r.startswith("#") for r in removed[1:5])
    # the hand-off, and nothing else
    assert removed[5:] == ["await self.wait_first(", "callback(message), self.suspend_flow.wait()",
                           ")"]
    body = [a for a in added if a and not a.startswith("#")]
    assert body == [
        "async def _drain_messages(self: Any, fetcher: Any) -> None:  "
        "# pragma: no cover - a worker loop",
        "from mode import Service",
        "from faust.transport.consumer import CONSUMER_FETCHING",
        "done, rest = run_until_suspended(callback(message))",
        "if not done:",
        "await self.wait_first(rest, self.suspend_flow.wait())",
    ]
