"""The embedded broker answers a fetch with nothing once a partition holds many batches.

One partition is filled with ``--batches`` single-record batches (what single-record
producers leave, the only safe kind on Tansu, see ../shared/BROKER.md). Then a consumer reads
it from offset 0 for at most ``--seconds``, twice, in the same run:

  fixed      aiokafka with ``fetch_max_wait_ms=25`` (the worker's wait before 2026-11-23)
  adaptive   the same consumer with ``streams.app.adaptive_fetch_wait`` (25 ms up to 1,500 ms)

It prints the records each one read, the time it took and its final wait. Tansu 0.6.0
returns no records, without error, when listing the partition's batches takes longer than
the wait.

    python bench/tansu_fetch_wait.py --batches 60000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.app import adaptive_fetch_wait  # noqa: E402
from streams.broker import EmbeddedBroker, create_topics  # noqa: E402

VALUE = b'{"pad":"' + b"x" * 380 + b'"}'


async def fill(bootstrap: str, n: int) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=600,
                                acks=1)   # a batch cannot hold two of these records
    await producer.start()
    t0 = time.perf_counter()
    try:
        sent = [await producer.send("t", value=VALUE) for _ in range(n)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def read(bootstrap: str, n: int, seconds: float, adaptive: bool,
               wait_ms: int = 25) -> tuple[int, float, int]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer("t", bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    if adaptive:
        adaptive_fetch_wait(consumer, wait_ms, 1500)
    await consumer.start()
    got, t0 = 0, time.perf_counter()
    try:
        while got < n and time.perf_counter() - t0 < seconds:
            batch = await consumer.getmany(timeout_ms=200)
            got += sum(len(v) for v in batch.values())
        return got, time.perf_counter() - t0, consumer._fetcher._fetch_max_wait_ms
    finally:
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=60_000)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    broker = EmbeddedBroker(log_path=Path(tempfile.gettempdir()) / "tansu-fetch-wait.log")
    broker.start()
    try:
        create_topics(broker.bootstrap, {"t": 1})
        took = asyncio.run(fill(broker.bootstrap, args.batches))
        print(f"{args.batches:,} single-record batches in one partition ({took:.1f} s)")
        for name, adaptive in (("fixed 25 ms", False), ("adaptive", True)):
            got, secs, wait = asyncio.run(read(broker.bootstrap, args.batches, args.seconds,
                                               adaptive))
            print(f"  {name:12} read {got:7,} of {args.batches:,} in {secs:4.1f} s"
                  f" (final wait {wait} ms)")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
