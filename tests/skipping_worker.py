"""A worker (``python -m tests.skipping_worker worker``) that loses input records at its start
the way faust-streaming's rebalance fetch bugs did (``streams/faust_fixes.py``), so that the
start guard (``streams/continuity.py``) runs against a real broker and a real Faust consumer.

``SKIP_TOPIC`` / ``SKIP_PARTITION`` / ``SKIP_RECORDS``: the first time that input partition is
fetched, aiokafka's position is moved ``SKIP_RECORDS`` past the committed offset, and Faust's
read offset is left where its recovery put it. That is the state the bug left behind: the
agent's first record is past the committed offset, and Faust records the offsets in between
as a gap in the stream.

The worker then handles batches slowly (``SLOW_BATCH`` seconds each). It exits hard
(``os._exit``, as a SIGKILL would stop it) right after the first commit of that partition
that follows the guard's rewind, and prints ``COMMIT-AFTER-REWIND committed=<offset>
handled=<last offset handed to the engine>`` first. A commit past what was handled would
lose the records in between at the restart.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from aiokafka import TopicPartition
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.agents import Topology

# read at import with defaults: pytest imports this module when it collects doctests
TOPIC = os.environ.get("SKIP_TOPIC", "")
PARTITION = int(os.environ.get("SKIP_PARTITION", "0"))
RECORDS = int(os.environ.get("SKIP_RECORDS", "0"))
SLOW = float(os.environ.get("SLOW_BATCH", "0.1"))

_state: dict[str, Any] = {"skipped": False, "topology": None, "handled": -1}

_getmany = AIOKafkaConsumerThread.getmany


async def _skipping_getmany(self: Any, active_partitions: Any, timeout: float) -> Any:
    if not _state["skipped"]:
        for tp in active_partitions:
            if tp.topic == TOPIC and tp.partition == PARTITION:
                committed = self.consumer._committed_offset.get(tp)
                if committed is not None:
                    to = committed + RECORDS
                    self._ensure_consumer().seek(TopicPartition(TOPIC, PARTITION), to)
                    _state["skipped"] = True
                    print(f"SKIPPED {TOPIC}[{PARTITION}] committed={committed} to={to}",
                          flush=True)
    return await _getmany(self, active_partitions, timeout)


_init = Topology.__init__


def _init_topology(self: Topology, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    _state["topology"] = self


_on_batch = Topology.on_batch


async def _slow_batch(self: Topology, events: Any) -> None:
    # (a split worker's on_batch runs this too: its records are shipped at the batch's end)
    await _on_batch(self, events)
    rt = self.runtimes.get(PARTITION)
    if rt is not None and TOPIC in rt.positions:
        _state["handled"] = rt.positions[TOPIC]
    await asyncio.sleep(SLOW)


_commit_offsets = Consumer._commit_offsets


async def _commit_then_crash(self: Any, offsets: Any, *args: Any, **kwargs: Any) -> Any:
    ok = await _commit_offsets(self, offsets, *args, **kwargs)
    topo = _state["topology"]
    if ok and topo is not None and topo.guard.stats["rewinds"] > 0:
        for tp, offset in offsets.items():
            if tp.topic == TOPIC and tp.partition == PARTITION:
                print(f"COMMIT-AFTER-REWIND committed={offset} handled={_state['handled']} "
                      f"guard={topo.guard.stats}", flush=True)
                os._exit(17)
    return ok


if __name__ == "__main__":   # only in the worker process (pytest imports this module too)
    AIOKafkaConsumerThread.getmany = _skipping_getmany  # type: ignore[method-assign]
    Topology.__init__ = _init_topology  # type: ignore[method-assign]
    Topology.on_batch = _slow_batch  # type: ignore[method-assign]
    Consumer._commit_offsets = _commit_then_crash  # type: ignore[method-assign]

    from streams.__main__ import main

    sys.exit(main())
