"""The start guard (``streams/continuity.py``) against a real broker and Faust consumer.

``tests.skipping_worker`` takes over a group with committed offsets and a backlog. At its
start, one input partition's position is moved past the committed offset, as
faust-streaming's rebalance fetch bugs did (``streams/faust_fixes.py``), so its agent's first
record of that partition is hundreds of records late. Expected:

* the guard holds that record, rewinds the partition to the committed offset, and the
  records in between are handed to the engine;
* the first commit after the rewind covers only records handed to the engine. Faust had
  recorded the skipped offsets as a gap in the stream, and counted a gap as acked, so the
  first records acked after the rewind would otherwise have let it commit past every
  skipped record. The worker exits hard right after that commit;
* a normal worker restarted on the same group ends with the changes and table of an
  offline replay of the whole stream: nothing lost.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from tests.conftest import key_of, produce_raw, simulated_lines, wait_committed
from tests.test_streams_pipeline import INPUT, check_against_replay, setup_env

from models.partitioning import partition_for

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def test_records_skipped_at_the_start_are_read_again_and_not_committed_past(
        broker, workers, unique, tmp_path):
    env, settings = setup_env(broker, unique, tmp_path)
    topic = settings.topic(INPUT)
    lines = simulated_lines(customers=80, days=60, seed=23)
    half = len(lines) // 3
    first, second = lines[:half], lines[half:]

    # a committed offset on every partition: a normal worker takes the first part, stops
    w = workers("streams", env, name="first")
    w.wait_ready(60)
    produce_raw(broker.bootstrap, topic, [(key_of(x), x) for x in first])
    wait_committed(broker.bootstrap, settings.app_id, topic, 120, [w])
    w.stop()

    # a backlog; the partition with the most of it loses half of it at the next start
    produce_raw(broker.bootstrap, topic, [(key_of(x), x) for x in second])
    per_partition = Counter(partition_for(key_of(x).decode(), settings.partitions)
                            for x in second)
    victim, backlog = per_partition.most_common(1)[0]
    skip = backlog // 2
    assert skip >= 200, per_partition
    skipping = dict(env, SKIP_TOPIC=topic, SKIP_PARTITION=str(victim),
                    SKIP_RECORDS=str(skip), SLOW_BATCH="0.1", RETENTION_BATCH_MAX="20")
    s = workers("tests.skipping_worker", skipping, name="skipping")
    s.wait_ready(60)
    s.proc.wait(120)
    log = s.log()
    skipped = re.search(r"SKIPPED \S+ committed=(\d+) to=(\d+)", log)
    assert skipped, log[-3000:]
    committed_before, skipped_to = map(int, skipped.groups())
    # the guard saw the late first record and read the partition again
    assert re.search(rf"starts at offset {skipped_to} after an assignment, the committed "
                     rf"offset is {committed_before}: records in between were not delivered; "
                     rf"asking the "
                     rf"group for a new assignment", log), log[-3000:]
    done = re.search(r"COMMIT-AFTER-REWIND committed=(\d+) handled=(-?\d+)", log)
    assert done, log[-3000:]
    committed, handled = map(int, done.groups())
    assert s.proc.returncode == 17, log[-3000:]
    # the commit covers records handed to the engine, nothing of the skipped range beyond
    assert committed_before < committed <= handled + 1, (committed_before, committed, handled)
    assert committed < skipped_to, (committed, skipped_to)

    # a normal worker finishes: the replay of everything, nothing lost
    w2 = workers("streams", env, name="after")
    w2.wait_ready(60)
    wait_committed(broker.bootstrap, settings.app_id, topic, 180, [w2])
    check_against_replay(broker, settings, lines)
