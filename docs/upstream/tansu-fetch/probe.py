"""Wire-level Fetch / ListOffsets probes with aiokafka's client (no consumer logic in between)."""
from __future__ import annotations
import asyncio, struct, time

def parse_batches(buf: bytes):
    """(n_batches, n_records, first_base_offset, last_offset) of a v2 record-batch blob."""
    i, n, recs, first, last = 0, 0, 0, None, None
    while i + 61 <= len(buf):
        base, length = struct.unpack_from(">qi", buf, i)
        if i + 12 + length > len(buf):
            break  # partial trailing batch
        lod = struct.unpack_from(">i", buf, i + 23)[0]
        cnt = struct.unpack_from(">i", buf, i + 57)[0]
        first = base if first is None else first
        last = base + lod
        n += 1; recs += cnt; i += 12 + length
    return n, recs, first, last

async def _fetch(bootstrap, topic, partition, offset, max_wait_ms, max_bytes, part_max_bytes, min_bytes=1):
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.fetch import FetchRequest
    c = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=120000)
    await c.bootstrap()
    try:
        await c._maybe_wait_metadata() if hasattr(c, "_maybe_wait_metadata") else None
        await c.force_metadata_update()
        node = c.cluster.leader_for_partition(__import__("aiokafka").TopicPartition(topic, partition))
        req = FetchRequest(max_wait_ms, min_bytes, max_bytes, 0, [(topic, [(partition, offset, part_max_bytes)])])
        t0 = time.monotonic()
        resp = await c.send(node, req)
        dt = time.monotonic() - t0
        t = resp.topics[0]
        p = t[1][0]
        # v4+: partition, error_code, highwater, last_stable, (log_start v5+), aborted, records
        err, hw = p[1], p[2]
        records = p[-1] or b""
        nb, nr, first, last = parse_batches(records)
        return dict(p=partition, off=offset, wait=max_wait_ms, err=err, hw=hw, bytes=len(records),
                    batches=nb, records=nr, first=first, last=last, ms=round(dt * 1000),
                    ver=type(resp).__name__)
    finally:
        await c.close()

def fetch(bootstrap, topic, partition, offset, max_wait_ms=500, max_bytes=52428800, part_max_bytes=1048576):
    return asyncio.run(asyncio.wait_for(
        _fetch(bootstrap, topic, partition, offset, max_wait_ms, max_bytes, part_max_bytes), 150))

async def _consume_from(bootstrap, topic, partition, offset, max_partition_fetch_bytes, seconds, fetch_max_wait_ms=500):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         max_partition_fetch_bytes=max_partition_fetch_bytes,
                         fetch_max_wait_ms=fetch_max_wait_ms, request_timeout_ms=60000)
    await c.start()
    try:
        tp = TopicPartition(topic, partition); c.assign([tp]); c.seek(tp, offset)
        t0 = time.monotonic(); got = 0
        while time.monotonic() - t0 < seconds:
            r = await c.getmany(tp, timeout_ms=500)
            got += sum(len(v) for v in r.values())
            if got:
                break
        return got, round(time.monotonic() - t0, 2)
    finally:
        await c.stop()

def consume_from(bootstrap, topic, partition, offset, max_partition_fetch_bytes=1048576, seconds=5.0, fetch_max_wait_ms=500):
    return asyncio.run(asyncio.wait_for(_consume_from(bootstrap, topic, partition, offset,
                                                      max_partition_fetch_bytes, seconds, fetch_max_wait_ms), seconds + 60))
