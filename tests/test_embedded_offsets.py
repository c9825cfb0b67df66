"""True end offsets on the embedded broker (streams/embedded_offsets.py), whose ListOffsets
is short when a partition's last batch holds several records.

Table recovery after a restart with multi-record changelog batches is exercised by the
restart tests (tests/test_streams_state.py, tests/test_faults.py), now that Faust's
producer batches on the embedded broker too."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.broker import EmbeddedBroker, create_topics
from streams.embedded_offsets import true_end_offsets
from tests.conftest import end_offsets

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]


async def _produce_and_ask(bootstrap: str, topic: str) -> tuple[dict, dict]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=100,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        # partition 1: one batch of 500; partition 0: one batch of 500, then 3 single records;
        # partition 2: empty
        futs = [await producer.send(topic, b"x" * 20, partition=i % 2) for i in range(1000)]
        await asyncio.gather(*futs)
        for _ in range(3):
            await (await producer.send(topic, b"y", partition=0))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        listed = await consumer.end_offsets(tps)
        true = await true_end_offsets(consumer._client, listed)
    finally:
        await consumer.stop()
    return ({tp.partition: v for tp, v in listed.items()},
            {tp.partition: v for tp, v in true.items()})


def test_list_offsets_is_short_and_the_fetch_high_water_mark_is_not(
        broker: EmbeddedBroker, unique: str) -> None:
    topic = f"ends-{unique}"
    create_topics(broker.bootstrap, {topic: 3})
    listed, true = asyncio.run(_produce_and_ask(broker.bootstrap, topic))
    # the broker's answer: the last batch's first offset + 1 (1 for a single batch of 500)
    assert listed == {0: 503, 1: 1, 2: 0}
    assert true == {0: 503, 1: 500, 2: 0}
    # the tests' own helper agrees (kafka-python)
    assert end_offsets(broker.bootstrap, topic) == {0: 503, 1: 500, 2: 0}


def test_faust_highwaters_are_patched_only_on_the_embedded_broker() -> None:
    from faust.transport.drivers import aiokafka as driver

    from streams.app import create_app
    from streams.settings import Settings

    create_app(Settings.from_env({"RETENTION_EMBEDDED_BROKER": "1"}),
               register=lambda app, s: None)
    assert getattr(driver.AIOKafkaConsumerThread, "_retention_true_highwaters", False)


def test_tail_starts_at_the_true_end_not_inside_the_last_batch(broker: EmbeddedBroker,
                                                               unique: str) -> None:
    """``python -m streams tail`` on the embedded broker (``seek_to_true_end``): after one
    batch of 300 records per partition, ListOffsets points inside it, so a plain
    ``seek_to_end`` would print 299 old records per partition; the corrected seek prints only
    what comes after."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from streams.embedded_offsets import seek_to_true_end

    topic = f"tail-{unique}"
    create_topics(broker.bootstrap, {topic: 2})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200,
                             batch_size=1 << 20)
    for i in range(600):
        producer.send(topic, f"old-{i}".encode(), partition=i % 2)
    producer.flush()
    tps = [TopicPartition(topic, p) for p in range(2)]
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=200)
    try:
        consumer.assign(tps)
        listed = consumer.end_offsets(tps)
        assert all(listed[tp] < 300 for tp in tps)          # the broker's short answer
        ends = seek_to_true_end(consumer, tps)
        assert ends == {tp: 300 for tp in tps}
        assert [consumer.position(tp) for tp in tps] == [300, 300]
        for i in range(4):
            producer.send(topic, f"new-{i}".encode(), partition=i % 2)
        producer.flush()
        seen: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(seen) < 4 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                seen.extend(r.value for r in records)
        assert sorted(seen) == [b"new-0", b"new-1", b"new-2", b"new-3"]
    finally:
        consumer.close()
        producer.close()
