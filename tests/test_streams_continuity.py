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


def reassign(g: StartGuard, topic: str, partition: int, committed: int) -> None:
    """What the agent does around the rebalance the guard asked for."""
    g.forget(partition)                             # revoked
    g.expect(topic, partition, committed)           # assigned again, runtime rebuilt


def test_a_start_past_the_committed_offset_is_held_until_a_new_assignment_reads_it_again():
    clock = Clock()
    g = StartGuard(rewind_every=30.0, clock=clock)
    g.expect("in", 0, 565)
    assert g.check("in", 0, 810) == "rewind"        # ask the group for a new assignment
    assert g.rewind_to("in", 0) == 565
    # stale records of the old fetch keep coming until the rebalance: held, no new request
    assert [g.check("in", 0, o) for o in (811, 812, 813)] == ["drop"] * 3
    reassign(g, "in", 0, 565)
    assert g.check("in", 0, 565) == "ok"            # the missing records arrive
    assert g.check("in", 0, 566) == "ok" and g.check("in", 0, 810) == "ok"
    assert not g.pending("in", 0)
    assert g.stats == {"rewinds": 1, "dropped": 4, "gaps_accepted": 0}


def test_a_new_assignment_is_asked_for_again_when_none_comes():
    clock = Clock()
    g = StartGuard(rewind_every=30.0, clock=clock)
    g.expect("in", 0, 565)
    assert g.check("in", 0, 810) == "rewind"
    clock.t = 10.0
    assert g.check("in", 0, 811) == "drop"
    clock.t = 31.0                                  # no rebalance came: ask again
    assert g.check("in", 0, 812) == "rewind"
    assert g.check("in", 0, 810) == "drop"          # stale, even the first record again
    reassign(g, "in", 0, 565)
    assert g.check("in", 0, 565) == "ok"
    assert g.stats["rewinds"] == 2 and g.stats["gaps_accepted"] == 0


def test_a_real_gap_is_accepted_when_the_new_assignment_brings_the_same_first_record():
    g = StartGuard()
    g.expect("in", 1, 100)                          # 100 is a transaction marker, say
    assert g.check("in", 1, 101) == "rewind"
    reassign(g, "in", 1, 100)
    assert g.check("in", 1, 101) == "gap"           # the broker has nothing before 101
    assert g.last_gap == ("in", 1, 100, 101)
    assert g.check("in", 1, 102) == "ok"


def test_rewinds_are_bounded():
    g = StartGuard(max_rewinds=2)
    g.expect("in", 0, 0)
    verdicts = []
    for offset in (50, 51, 52):                     # each assignment starts later still
        verdicts.append(g.check("in", 0, offset))
        if verdicts[-1] == "rewind":
            reassign(g, "in", 0, 0)
    assert verdicts == ["rewind", "rewind", "gap"]
    assert g.stats["gaps_accepted"] == 1 and not g.pending("in", 0)
    assert g.check("in", 0, 53) == "ok"
    reassign(g, "in", 0, 0)                         # a later assignment is checked anew
    assert g.check("in", 0, 70) == "rewind"


def test_a_committed_offset_that_moved_starts_a_new_check():
    g = StartGuard()
    g.expect("in", 0, 565)
    assert g.check("in", 0, 810) == "rewind"
    reassign(g, "in", 0, 600)                       # another worker committed meanwhile
    assert g.check("in", 0, 600) == "ok"


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
