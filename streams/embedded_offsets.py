"""The true end offsets of partitions on the embedded broker, whose ListOffsets is wrong.

Tansu 0.6 answers ListOffsets (latest) with the *first* offset of the partition's last
record batch plus one, so for a last batch of several records the end it reports is too
low (``../shared/BROKER.md``). Faust's table recovery reads a changelog up to that end
(``Consumer.highwaters``): it stopped short, which lost the last updates with the memory
store and raised ``ConsistencyError`` with RocksDB. Until now the worker avoided it with one
record per produce batch on the embedded broker, which made every changelog write a produce
request of its own: the end-to-end latency benchmark's p99 at 2,000 events/s was 286 ms
with it and 187 ms with batching (one run each, same machine, same hour).

A fetch answer carries the partition's high-water mark, and Tansu gets that one right. So
on the embedded broker the worker's ``highwaters`` (what recovery uses) asks ListOffsets
as before, then fetches every non-empty partition from its reported end minus one, the
last record ListOffsets is sure of (at most 1 byte asked per partition: the broker sends
one batch anyway) and takes the larger of the two. On Apache Kafka nothing changes: the
patch acts only when the App's settings say ``embedded_broker``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

__all__ = ["patch_highwaters_on_embedded_broker", "seek_to_true_end", "true_end_offsets"]

log = logging.getLogger(__name__)

#: fetch waits tried in turn (ms); Tansu answers a fetch with nothing when its wait is 0 or
#: shorter than listing the partition's batches takes (streams/app.py)
_WAITS_MS = (500, 1500, 5000)


async def true_end_offsets(client: Any, ends: Mapping[Any, int]) -> dict[Any, int]:
    """``ends`` (ListOffsets answers by ``TopicPartition``) corrected from the high-water
    marks of fetch answers; ``client`` is a started ``AIOKafkaClient``."""
    from aiokafka.protocol.fetch import FetchRequest

    out = dict(ends)
    todo = {tp: end for tp, end in ends.items() if end > 0}
    by_name = {(tp.topic, tp.partition): tp for tp in todo}
    for wait in _WAITS_MS:
        if not todo:
            break
        by_node: dict[Any, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for tp, end in todo.items():
            node = client.cluster.leader_for_partition(tp)
            if node is None or node < 0:
                await client.force_metadata_update()
                node = client.cluster.leader_for_partition(tp)
            by_node[node][tp.topic].append((tp.partition, end - 1, 1))
        answers = await asyncio.gather(*(
            client.send(node, FetchRequest(wait, 1, 1 << 20, 0, list(topics.items())))
            for node, topics in by_node.items() if node is not None), return_exceptions=True)
        for resp in answers:
            if isinstance(resp, BaseException):
                log.warning("fetching the high-water marks failed: %r", resp)
                continue
            for topic, partitions in resp.topics:
                for partition, error_code, highwater, *_ in partitions:
                    tp = by_name.get((topic, partition))
                    if tp is None or tp not in todo or error_code != 0:
                        continue
                    out[tp] = max(out[tp], highwater)
                    del todo[tp]
    if todo:
        log.warning("no high-water mark for %s: keeping the ListOffsets answers (they may be "
                    "short of the end)", sorted(map(str, todo)))
    return out


def seek_to_true_end(consumer: Any, tps: list[Any], timeout: float = 30.0,
                     strict: bool = False) -> dict[Any, int]:
    """kafka-python: move the assigned ``tps`` of ``consumer`` to their true ends on the
    embedded broker and return them. ListOffsets (``end_offsets``) first, then each
    non-empty partition is read from that end minus one until its fetch answer gives the
    high-water mark, and the larger of the two is taken (the same correction as
    :func:`true_end_offsets`, which does it with aiokafka for Faust). A partition whose mark
    does not come within ``timeout`` keeps its ListOffsets answer, with a warning, or raises
    ``TimeoutError`` when ``strict``."""
    ends = dict(consumer.end_offsets(tps))
    todo = [tp for tp in tps if ends.get(tp, 0) > 0]
    for tp in todo:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in todo):
        consumer.poll(timeout_ms=500)
    for tp in todo:
        hw = consumer.highwater(tp)
        if hw is None:
            if strict:
                raise TimeoutError(f"no high-water mark for {tp} in {timeout:g} s")
            log.warning("no high-water mark for %s: keeping the ListOffsets answer", tp)
        else:
            ends[tp] = max(ends[tp], hw)
    for tp in tps:
        consumer.seek(tp, ends.get(tp, 0))
    return ends


def patch_highwaters_on_embedded_broker() -> None:
    """Make Faust's aiokafka consumer thread return true end offsets from ``highwaters``
    when its App runs on the embedded broker (idempotent)."""
    from faust.transport.drivers import aiokafka as driver

    cls = driver.AIOKafkaConsumerThread
    if getattr(cls, "_retention_true_highwaters", False):
        return
    original = cls._highwaters

    async def _highwaters(self: Any, partitions: Any) -> Any:
        ends = await original(self, partitions)
        settings = getattr(self.app, "retention_settings", None)
        if settings is None or not settings.embedded_broker or self.consumer.in_transaction:
            return ends
        return await true_end_offsets(self._ensure_consumer()._client, ends)

    cls._highwaters = _highwaters
    cls._retention_true_highwaters = True
