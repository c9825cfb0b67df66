"""The start guard (streams/continuity.py): records skipped after a rebalance are read again.

The scenario is the one the two-worker fault test found: committed offset 565, the first
record delivered after the assignment 810, stale records after it, then the re-read."""

from __future__ import annotations

import doctest

from streams import continuity
from streams.continuity import StartGuard


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_doctests() -> None:
    result = doctest.testmod(continuity)
    assert result.attempted > 0 and result.failed == 0


def test_a_start_past_the_committed_offset_is_held_and_rewound_until_the_records_come():
    clock = Clock()
    g = StartGuard(rewind_every=1.0, clock=clock)
    g.expect("in", 0, 565)
    assert g.check("in", 0, 810) == "rewind"
    assert g.rewind_to("in", 0) == 565
    # stale records of the old fetch keep coming: held, no second seek within a second
    assert [g.check("in", 0, o) for o in (811, 812, 813)] == ["drop"] * 3
    clock.t = 1.5                                   # still stale a second later: seek again
    assert g.check("in", 0, 814) == "rewind"
    assert g.check("in", 0, 565) == "ok"            # the missing records arrive
    assert g.check("in", 0, 566) == "ok" and g.check("in", 0, 810) == "ok"
    assert not g.pending("in", 0)
    assert g.stats == {"rewinds": 2, "dropped": 5, "gaps_accepted": 0}


def test_a_real_gap_is_accepted_when_the_rewind_brings_the_same_first_record_back():
    g = StartGuard()
    g.expect("in", 1, 100)                          # 100 is a transaction marker, say
    assert g.check("in", 1, 101) == "rewind"
    assert g.check("in", 1, 101) == "gap"           # the broker has nothing before 101
    assert g.last_gap == ("in", 1, 100, 101)
    assert g.check("in", 1, 102) == "ok"


def test_rewinds_are_bounded():
    clock = Clock()
    g = StartGuard(max_rewinds=2, rewind_every=1.0, clock=clock)
    g.expect("in", 0, 0)
    verdicts = []
    for i, offset in enumerate(range(50, 60)):      # the start never comes back
        clock.t = float(i)
        verdicts.append(g.check("in", 0, offset))
    assert verdicts[:2] == ["rewind", "rewind"] and verdicts[2] == "gap"
    assert verdicts[3:] == ["ok"] * 7


def test_only_the_start_of_an_assignment_is_checked_and_each_topic_partition_apart():
    g = StartGuard()
    g.expect("in", 0, 10)
    g.expect("orders", 0, 3)
    g.expect("in", 2, None)                         # nothing committed: nothing to check
    assert g.check("in", 2, 999) == "ok"
    assert g.check("in", 0, 10) == "ok"
    assert g.check("in", 0, 50) == "ok"             # later jumps are not the guard's
    assert g.check("orders", 0, 4) == "rewind"
    assert g.check("orders", 0, 2) == "ok"          # a re-delivery before the start is fine
    g.expect("in", 3, 7)
    g.forget(3)                                     # revoked before any record came
    assert g.check("in", 3, 70) == "ok"
