"""True end offsets on the embedded broker (streams/embedded_offsets.py), whose ListOffsets
is short when a partition's last batch holds several records.

Table recovery after a restart with multi-record changelog batches is exercised by the
restart tests (tests/test_streams_state.py, tests/test_faults.py), now that Faust's
producer batches on the embedded broker too."""

from __future__ import annotations

import asyncio

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
