"""The worker's fetch wait on the embedded broker adapts (``streams.app.adaptive_fetch_wait``).

Tansu answers a fetch with no records when listing the partition's stored batches takes
longer than the fetch wait, and the listing grows with the partition. Measured here: with
60,000 single-record batches in one partition, a consumer with the worker's former fixed
25 ms wait read 134 records in 8 s (the "wedged input topic" of the long fault test), while
the adaptive one read all 60,000 in 3.2 s, its wait settled at 100 ms.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streams.app import _patch_fetcher


class FakeFetcher:
    """Stands in for aiokafka's ``Fetcher``: its ``_proc_fetch_request`` answers records or
    not, as told."""

    def __init__(self) -> None:
        self._fetch_max_wait_ms = 25
        self._retention_wait_range = (25, 1500)
        self.answers: list[bool] = []

    async def _proc_fetch_request(self, assignment, node_id, request):
        return self.answers.pop(0)


_patch_fetcher(FakeFetcher)


def _assignment(highwater: int | None) -> SimpleNamespace:
    state = SimpleNamespace(highwater=highwater)
    return SimpleNamespace(active=True, state_value=lambda tp: state)


def _fetch(fetcher: FakeFetcher, got: bool, highwater: int | None, offset: int = 100) -> int:
    fetcher.answers.append(got)
    request = SimpleNamespace(topics=[("in", [(0, offset, 1 << 20)])])
    asyncio.run(fetcher._proc_fetch_request(_assignment(highwater), 0, request))
    return fetcher._fetch_max_wait_ms


def test_the_wait_doubles_while_a_backlog_is_answered_with_nothing_and_keeps_what_worked():
    f = FakeFetcher()
    waits = [_fetch(f, got=False, highwater=5000) for _ in range(8)]
    assert waits == [50, 100, 200, 400, 800, 1500, 1500, 1500]
    assert _fetch(f, got=True, highwater=5000) == 1500      # records from the backlog: kept


def test_the_wait_comes_back_down_at_the_tail():
    f = FakeFetcher()
    for _ in range(3):
        _fetch(f, got=False, highwater=5000)
    assert f._fetch_max_wait_ms == 200
    # records near the tail, then nothing new: both are the tail
    assert _fetch(f, got=True, highwater=150) == 100
    assert [_fetch(f, got=False, highwater=100) for _ in range(3)] == [50, 25, 25]
    assert _fetch(f, got=False, highwater=None) == 25        # high-water mark not known yet


def test_records_arriving_during_the_answer_are_not_a_backlog():
    """At the tail a few records arrive while the broker answers: the answer is empty and
    the high-water mark just past the fetch offset. The wait stays short (a first version
    doubled it here, and the latency benchmark's p50 went to seconds)."""
    f = FakeFetcher()
    assert [_fetch(f, got=False, highwater=105) for _ in range(5)] == [25] * 5
    assert [_fetch(f, got=(i % 2 == 0), highwater=110) for i in range(6)] == [25] * 6


def test_a_consumer_without_the_range_is_left_alone():
    f = FakeFetcher()
    f._retention_wait_range = None
    assert [_fetch(f, got=False, highwater=5000) for _ in range(3)] == [25, 25, 25]


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_a_partition_of_many_single_record_batches_is_read_to_the_end(broker, unique):
    """60,000 single-record batches (what single-record producers leave): the adaptive
    consumer reads them all. With the fixed 25 ms wait it got 134 of them in 8 s here."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.app import adaptive_fetch_wait
    from streams.broker import create_topics

    topic = f"fetchwait-{unique}"
    create_topics(broker.bootstrap, {topic: 1})
    n = 60_000
    value = b'{"pad":"' + b"x" * 380 + b'"}'

    async def fill() -> None:
        # one record per batch: a batch may not hold two of these records
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0,
                                    max_batch_size=600, acks=1)
        await producer.start()
        try:
            sent = [await producer.send(topic, value=value) for _ in range(n)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    async def read() -> tuple[int, int]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap,
                                    fetch_max_wait_ms=25, auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        adaptive_fetch_wait(consumer, 25, 1500)
        await consumer.start()
        got, deadline = 0, asyncio.get_running_loop().time() + 120
        try:
            while got < n and asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                got += sum(len(v) for v in batch.values())
            return got, consumer._fetcher._fetch_max_wait_ms
        finally:
            await consumer.stop()

    asyncio.run(fill())
    got, wait = asyncio.run(read())
    assert got == n, (got, wait)
