"""What one produce request costs the embedded broker, as its partition grows, with and
without a consumer reading the partition at its tail (as downstream services read the
change topics).

One fresh broker per variant. Per round: the partition grows by ``--grow`` single-record
batches, then ``--probe`` single-record produce requests are timed one by one (each awaited
before the next), and the broker's CPU time over them is read from ``/proc``. Printed per
round: batches in the partition, milliseconds per request (wall) and broker CPU per request,
and the ratio to the first round of the same variant (the baseline of this run).

    python bench/tansu_produce_cost.py --rounds 10 --grow 5000 --probe 300

This is why ``streams/outputs.py`` batches the output topics even on the embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.broker import EmbeddedBroker, create_topics  # noqa: E402


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def variant(tail_reader: bool, rounds: int, grow: int, probe: int) -> list[tuple]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    broker = EmbeddedBroker().start()
    rows = []
    try:
        create_topics(broker.bootstrap, {"t": 1})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_batch_size=1,
                                    linger_ms=0)
        await producer.start()
        consumer = None
        if tail_reader:
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                                        fetch_max_wait_ms=10, auto_offset_reset="latest")
            await consumer.start()
            consumer.assign([TopicPartition("t", 0)])
        pid = broker.proc.pid
        size = 0

        async def drain() -> None:       # keep the consumer at the tail
            while consumer is not None:
                await consumer.getmany(timeout_ms=50)

        reader = asyncio.create_task(drain()) if consumer else None
        for _ in range(rounds):
            futs = [await producer.send("t", b"x" * 300) for _ in range(grow)]
            await asyncio.gather(*futs)
            size += grow
            c0, t0 = cpu_seconds(pid), time.perf_counter()
            for _ in range(probe):
                await (await producer.send("t", b"y" * 300))
            wall = (time.perf_counter() - t0) / probe * 1000
            cpu = (cpu_seconds(pid) - c0) / probe * 1000
            size += probe
            rows.append((size, wall, cpu))
            print(f"  tail reader {'yes' if tail_reader else 'no ':3}  {size:7,} batches  "
                  f"{wall:6.2f} ms/request  broker cpu {cpu:6.2f} ms/request  "
                  f"x{wall / rows[0][1]:.1f} of the first round", flush=True)
        if reader:
            reader.cancel()
        if consumer:
            await consumer.stop()
        await producer.stop()
    finally:
        broker.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--grow", type=int, default=5000)
    p.add_argument("--probe", type=int, default=300)
    args = p.parse_args()
    for tail in (False, True):
        asyncio.run(variant(tail, args.rounds, args.grow, args.probe))


if __name__ == "__main__":
    main()
