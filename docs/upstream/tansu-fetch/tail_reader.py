"""A consumer reading a topic at its tail (like a Faust worker's fetcher): aiokafka, all partitions
assigned, from the end (or from --from-offset), prints one JSON line per second: records got."""
import asyncio, json, sys, time, signal, argparse

async def main(a):
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, enable_auto_commit=False,
                         fetch_max_wait_ms=a.max_wait, request_timeout_ms=40000)
    await c.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        parts = sorted(c.partitions_for_topic(a.topic) or [])
        tps = [TopicPartition(a.topic, p) for p in parts]
        c.assign(tps)
        if a.from_offset >= 0:
            for tp in tps: c.seek(tp, a.from_offset)
        else:
            await c.seek_to_end(*tps)
        total, last_t, last_n = 0, time.monotonic(), 0
        while not stop.is_set():
            r = await c.getmany(timeout_ms=200)
            total += sum(len(v) for v in r.values())
            now = time.monotonic()
            if now - last_t >= 1.0:
                print(json.dumps({"t": time.time(), "got": total - last_n, "total": total}), flush=True)
                last_t, last_n = now, total
    finally:
        await c.stop()

p = argparse.ArgumentParser()
p.add_argument("bootstrap"); p.add_argument("topic")
p.add_argument("--from-offset", type=int, default=-1)
p.add_argument("--max-wait", type=int, default=500)
asyncio.run(main(p.parse_args()))
