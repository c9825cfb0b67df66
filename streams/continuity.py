"""A guard against input records skipped after a rebalance (no Faust import: unit-testable).

Found with the two-worker fault test (``tests/test_faults.py``, about 1 run in 15): after an
eager rebalance gave a running worker back the same partitions, the first record its agent
received for ``clickstream[0]`` was offset 810 while the group's committed offset was 565.
The 245 records in between never reached the agent (a stale fetch of the previous
generation, delivered and then skipped or cleared by Faust while its read offset moved past
them: the faust-streaming issue 596 family, see ``streams/faust_fixes.py``). Processing 810
wrote its customer's state with source position 810, so when the records 565-809 were read
again later (after the next crash), the per-customer dedupe skipped them as already applied:
a customer silently lost 26 events.

The guard: the first record of each input topic-partition after a partition's runtime is
built must be at (or before) the committed offset the worker was assigned. A later one is
not processed and not acked, and the worker asks its group for a new assignment (a
rebalance): Faust's recovery then starts the partition again from the committed offset, with
its read offset, its record of gaps and its queues reset. Records arriving until then are
dropped (not processed, not acked).

A seek inside the running consumer does not do this. ``tests/test_start_guard_broker.py``
tried it against the real broker: stale records still in Faust's pipeline moved its read
offset past the committed one again, so the records read again were dropped as already
read. Faust had also recorded the skipped offsets as a gap in the stream, and it counts a gap
as acked, so the first records acked after the seek would have let it commit past every
skipped record. A rebalance resets all of that.

A gap can be real: on Apache Kafka a committed offset can point at a transaction marker, or
at records removed by retention. When the new assignment brings the same first record back,
the gap is accepted. What the guard knows of a partition survives the rebalance it asked for.
A new assignment is asked for at most ``max_rewinds`` times; after that the gap is accepted
with an error in the log. If no new assignment comes within ``rewind_every`` seconds, it is
asked for again.

>>> g = StartGuard()
>>> g.expect("t", 0, 100)
>>> g.check("t", 0, 100)
'ok'
>>> g.check("t", 0, 101)          # checked only at the start
'ok'
>>> g.expect("t", 1, 565)
>>> g.check("t", 1, 810), g.check("t", 1, 811)      # ask for a new assignment; stale
('rewind', 'drop')
>>> g.forget(1); g.expect("t", 1, 565)              # the new assignment
>>> g.check("t", 1, 565)          # it brought the missing records
'ok'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["StartGuard"]


@dataclass
class _Expecting:
    offset: int                   # the committed offset: the first record expected
    first_seen: int | None = None   # the first later offset seen (the gap's end)
    rewinds: int = 0
    last_rewind: float = 0.0
    waiting: bool = False         # a new assignment was asked for and has not come yet


class StartGuard:
    """Per topic-partition: is this record the start expected after an assignment?

    ``check`` answers ``"ok"`` (process it), ``"gap"`` (process it: the records before it
    are not there, see :attr:`last_gap`), ``"drop"`` (do not process it, do not ack it:
    it will be read again) or ``"rewind"`` (the same as drop, and ask the group for a new
    assignment: the partition is read again from the committed offset,
    :meth:`rewind_to`)."""

    def __init__(self, max_rewinds: int = 3, rewind_every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rewinds = max_rewinds
        self.rewind_every = rewind_every
        self.clock = clock
        self._expecting: dict[tuple[str, int], _Expecting] = {}
        self.stats = {"rewinds": 0, "dropped": 0, "gaps_accepted": 0}
        self.last_gap: tuple[str, int, int, int] | None = None   # (topic, partition, from, to)

    def expect(self, topic: str, partition: int, committed: int | None) -> None:
        """The partition was (re)assigned: its first record should be at ``committed``
        (``None``: nothing committed yet, nothing to check). After a rewind to the same
        committed offset, what was seen before the rewind is kept."""
        key = (topic, partition)
        if committed is None or committed < 0:
            self._expecting.pop(key, None)
            return
        old = self._expecting.get(key)
        if old is not None and old.offset == committed and old.first_seen is not None:
            old.waiting = False
            return
        self._expecting[key] = _Expecting(committed)

    def forget(self, partition: int) -> None:
        """The partition was revoked. A rewind in progress is remembered (the rebalance it
        asked for revokes the partition first)."""
        for key in [k for k, e in self._expecting.items()
                    if k[1] == partition and e.first_seen is None]:
            del self._expecting[key]

    def pending(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._expecting

    def rewind_to(self, topic: str, partition: int) -> int:
        return self._expecting[(topic, partition)].offset

    def check(self, topic: str, partition: int, offset: int) -> str:
        key = (topic, partition)
        exp = self._expecting.get(key)
        if exp is None:
            return "ok"
        if offset <= exp.offset:            # the expected start (or a re-delivery before it)
            del self._expecting[key]
            return "ok"
        now = self.clock()
        if exp.first_seen is None:          # a gap: read again from the committed offset
            exp.first_seen = offset
            return self._rewind(exp, now)
        if exp.waiting and now - exp.last_rewind < self.rewind_every:
            self.stats["dropped"] += 1      # stale: the new assignment has not come yet
            return "drop"
        if (not exp.waiting and offset == exp.first_seen) or exp.rewinds >= self.max_rewinds:
            # the new assignment brought the same first record back (the gap is real), or
            # the records never came back: go on from here
            del self._expecting[key]
            self.stats["gaps_accepted"] += 1
            self.last_gap = (topic, partition, exp.offset, offset)
            return "gap"
        return self._rewind(exp, now)

    def _rewind(self, exp: _Expecting, now: float) -> str:
        exp.rewinds += 1
        exp.last_rewind = now
        exp.waiting = True
        self.stats["rewinds"] += 1
        self.stats["dropped"] += 1
        return "rewind"
