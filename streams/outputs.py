"""The producer of the worker's outputs: segment changes and their per-segment copies (dead
letters stay on Faust's producer, where the web sensor counts them).

Faust's own producer carries the table changelogs and the dead letters. The outputs have
a producer of their own, built by the same transport from the same settings (bootstrap
servers, SASL/SSL credentials, acks, compression, and the produce batching of
``RETENTION_PRODUCER_BATCH_BYTES`` and ``RETENTION_PRODUCER_LINGER_MS``, which Faust's producer
uses too): the changes handed over during a batch of input events leave
in a few produce requests, and a burst of table writes at a flush (Faust's producer buffer,
which the conductor waits on when it holds more than 100 records) does not queue them.

(It was first made because Faust's producer had to put one record in each produce batch on
the embedded broker, Tansu's ListOffsets being wrong for larger batches; the worker now
corrects the end offsets instead, ``streams/embedded_offsets.py``, and both producers batch
everywhere. Single-record produces cost Tansu time that grows with the batches already in a
partition: 0.13 ms of broker CPU each up to ~20,000 batches, 2-4 ms beyond 25,000;
``bench/tansu_produce_cost.py``.)

Delivery semantics are unchanged: the agent awaits every output before it acks the events
that caused them, and so before their offsets can be committed (``Topology.flush`` in
``streams/agents.py``).
Order per customer is kept: one producer, one partition per key, aiokafka sends one
request per broker at a time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OutputProducer", "create_output_producer"]


class OutputProducer:
    """Sends raw bytes to topics by name through its own Faust producer (started with the
    App, stopped after the agents: it is the App's first child service)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Any:
        """Hand one record to the producer (partition by key); returns the future of its
        delivery."""
        producer = self.producer
        if not producer._started.is_set():       # agents start after it; just in case
            await producer.maybe_start()
        return await producer.send(topic, key, value, None, None, None)


def create_output_producer(app: Any) -> OutputProducer:
    """A second producer of ``app``'s transport with batching on, registered as the App's
    first dependency (so started before and stopped after the agents)."""
    producer = app.transport.create_producer(beacon=app.beacon)
    producer.max_batch_size = app.conf.producer_max_batch_size
    app.add_dependency(producer)
    return OutputProducer(producer)
