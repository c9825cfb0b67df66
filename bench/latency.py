"""End-to-end latency: event produced -> its segment change consumed, at a fixed offered rate.

In one run, on one fresh embedded broker:

1. the maximum rate: the real worker (full scoring, RocksDB) drains a backlog of
   ``--backlog`` simulator events (timed from its first to its last event);
2. the latency: a second worker group on fresh topics; a producer offers simulator events at
   ``--fraction`` (default 0.5) of that maximum (or ``--rate``) for ``--seconds``; a consumer
   of ``segments.changes`` matches each change caused by an event (``cause_event_id``) with
   the time that event was handed to the producer. Reports p50 / p95 / p99 / max in ms.

Producer, consumer and clock are in this process (one clock); the worker is its own
process, as in production. The producer batches as Kafka clients do by default (linger
5 ms, counted in the latency: the time taken is when the event is handed to it);
``--producer-linger-ms 0`` sends one produce request per event, which on the embedded
broker costs more as the topics grow (``bench/tansu_produce_cost.py``).

    python bench/latency.py --backlog 20000 --seconds 60 --runs 3
    python bench/latency.py --rate 1000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as H  # noqa: E402


#: the shop's producer batches for up to this long (Kafka clients' default linger: Apache
#: Kafka 4.0's Java producer and librdkafka both wait 5 ms); set with --producer-linger-ms
LINGER_MS = 5


#: the change reader's fetch wait (Tansu holds a fetch for its whole wait: it adds up to this
#: to the latency measured; set with --reader-fetch-wait-ms)
READER_WAIT_MS = 10


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def paced(producer: Any, recs: list[tuple[str, bytes, bytes]], rate: float,
                before: Callable[[int], Any] | None = None) -> float:
    """Hand ``recs`` to ``producer`` at ``rate`` a second (``before(i)`` just before record
    ``i``); returns when it began (``time.monotonic()``)."""
    t0 = time.monotonic()
    for i, (topic, key, value) in enumerate(recs):
        ahead = i / rate - (time.monotonic() - t0)
        if ahead > 0:
            await asyncio.sleep(ahead)
        if before is not None:
            before(i)
        await producer.send(topic, key=key, value=value)
    return t0


async def offer(bootstrap: str, recs: list[tuple[str, bytes, bytes]], ids: list[str], rate: float,
                changes_topic: str, settle: float, linger_ms: int = LINGER_MS,
                reader_wait_ms: int = READER_WAIT_MS) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    sent: dict[str, float] = {}
    lat: list[float] = []
    at: list[float] = []                       # when each matched change's event was sent
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="latest",
                                fetch_max_wait_ms=reader_wait_ms)
    await consumer.start()
    tps = [TopicPartition(changes_topic, p) for p in range(H.PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    stop = asyncio.Event()
    n_changes = 0

    async def read() -> None:
        nonlocal n_changes
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for rs in batches.values():
                for r in rs:
                    n_changes += 1
                    c = orjson.loads(r.value)
                    t = sent.get(c.get("cause_event_id") or "")
                    if c.get("trigger") == "event" and t is not None:
                        lat.append((now - t) * 1000.0)
                        at.append(t)

    reader = asyncio.create_task(read())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    t0 = await paced(producer, recs, rate, lambda i: sent.setdefault(ids[i], time.time()))
    await producer.flush()
    offered = len(recs) / (time.monotonic() - t0)
    await asyncio.sleep(settle)
    stop.set()
    await reader
    await producer.stop()
    await consumer.stop()
    return {"offered": offered, "events": len(recs), "changes": n_changes, "matched": len(lat),
            "p50": pct(lat, 0.50), "p95": pct(lat, 0.95), "p99": pct(lat, 0.99),
            "max": max(lat) if lat else float("nan"), **trend(at, lat)}


def trend(at: list[float], lat: list[float]) -> dict:
    """p99 of the changes whose events were offered in the first and in the last third of
    the offer: a rate the worker sustains keeps them alike; a queue that builds up does
    not."""
    if not at:
        return {}
    t0, t1 = min(at), max(at)
    third = (t1 - t0) / 3
    first = [v for t, v in zip(at, lat) if t < t0 + third]
    last = [v for t, v in zip(at, lat) if t >= t1 - third]
    return {"p99_first_third": pct(first, 0.99), "p99_last_third": pct(last, 0.99)}


async def sustain(bootstrap: str, recs: list[tuple[str, bytes, bytes]], rate: float,
                  handled: Callable[[], int], skip: float,
                  linger_ms: int = LINGER_MS) -> dict:
    """Offer ``recs`` live at ``rate`` (at most) and count what the worker handles meanwhile
    (``handled()``: its running count), from ``skip`` seconds in to the end of the offer:
    the rate it sustains while events are produced live on the same machine."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    await producer.start()
    mark: list[tuple[float, int]] = []

    async def sample() -> None:
        await asyncio.sleep(skip)
        mark.append((time.monotonic(), handled()))

    sampler = asyncio.create_task(sample())
    t0 = await paced(producer, recs, rate)
    end = (time.monotonic(), handled())
    offered = len(recs) / (end[0] - t0)
    await sampler
    await producer.flush()
    await producer.stop()
    (a, na), (b, nb) = mark[0], end
    return {"offered": offered, "sustained": (nb - na) / (b - a)}


def measure_max(args: argparse.Namespace, run: int, work: Path, broker: Any,
                split: dict[str, str], out: dict) -> float:
    """The maximum rate: the worker drains a backlog (``--max-from backlog``); with
    ``--max-from live`` then the rate it sustains while that maximum is offered live."""
    s = H.settings_for(broker.bootstrap, f"lat-max-{run}", work / f"max-{run}", prefix="m.")
    H.create_topics(s)
    events = H.simulator_events(args.backlog, args.max_customers or args.customers,
                                seed=100 + run)
    H.produce(broker.bootstrap, H.records(events, s.topic_prefix))
    c = H.Consumer("pipeline", H.env_of(s, **split), args.backlog, work, name=f"max-{run}")
    res = H.run_consumers([c], args.backlog, timeout=args.backlog / 200 + 180)
    out["backlog_max"] = top = res["rate"]
    print(f"  run {run}: the worker drains a backlog at {top:,.0f} events/s", flush=True)
    if args.max_from == "live":
        s = H.settings_for(broker.bootstrap, f"lat-live-{run}", work / f"live-{run}",
                           prefix="v.")
        H.create_topics(s)
        n = int(top * args.max_seconds)
        events = H.simulator_events(n + 200, args.customers, seed=300 + run)
        worker = H.Consumer("pipeline", H.env_of(s, **split), n + 200, work,
                            name=f"live-{run}")
        try:
            warm_up(worker, broker.bootstrap, events[:200], s.topic_prefix)
            live = asyncio.run(sustain(
                broker.bootstrap, H.records(events[200:], s.topic_prefix), top,
                lambda: (worker.result() or {}).get("n", 0), args.max_seconds / 4,
                args.producer_linger_ms))
        finally:
            worker.stop()
        out["live_max"] = live["sustained"]
        print(f"  run {run}: offered {live['offered']:,.0f} events/s live, the worker "
              f"sustained {live['sustained']:,.0f}/s", flush=True)
        return live["sustained"]
    return top


def warm_up(worker: Any, bootstrap: str, warm: list[dict], prefix: str) -> None:
    """Start ``worker`` on ``warm`` events: it is ready and has its partition runtimes."""
    worker.start()
    H.produce(bootstrap, H.records(warm, prefix))
    deadline = time.monotonic() + 120
    while (worker.result() or {}).get("n", 0) < len(warm):
        if time.monotonic() > deadline or not worker.alive():
            raise RuntimeError(f"worker not ready\n{worker.tail()}")
        time.sleep(0.2)


def one_run(args: argparse.Namespace, run: int, work: Path) -> dict:
    split = {"RETENTION_DOMAIN_PROCESS": "1"} if args.domain_process else {}
    with H.fresh_broker(work) as broker:
        out: dict = {}
        rate = args.rate
        if rate is None:
            top = out["max_rate"] = measure_max(args, run, work, broker, split, out)
            rate = top * args.fraction
            print(f"  run {run}: max {top:,.0f} events/s -> offering {rate:,.0f}/s",
                  flush=True)
        s = H.settings_for(broker.bootstrap, f"lat-{run}", work / f"lat-{run}", prefix="l.")
        H.create_topics(s)
        n = int(rate * args.seconds)
        events = H.simulator_events(n + 200, args.customers, seed=200 + run)
        warm, events = events[:200], events[200:]
        worker = H.Consumer("pipeline", H.env_of(s, **split), n + 200, work,
                            name=f"lat-{run}")
        try:
            warm_up(worker, broker.bootstrap, warm, s.topic_prefix)
            recs = H.records(events, s.topic_prefix)
            ids = [e["event_id"] for e in events]
            res = asyncio.run(offer(broker.bootstrap, recs, ids, rate,
                                    s.topic("segments.changes"), args.settle,
                                    args.producer_linger_ms, args.reader_fetch_wait_ms))
        finally:
            worker.stop()
        out.update(res)
        out["rate"] = rate
        print(f"  run {run}: offered {res['offered']:,.0f}/s for {args.seconds:g}s, "
              f"{res['matched']:,} changes matched: p50 {res['p50']:.0f} ms, p95 "
              f"{res['p95']:.0f} ms, p99 {res['p99']:.0f} ms, max {res['max']:.0f} ms (p99 of "
              f"the first third {res.get('p99_first_third', float('nan')):.0f} ms, of the "
              f"last {res.get('p99_last_third', float('nan')):.0f} ms)",
              flush=True)
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=None, help="offered events/s (default: "
                   "--fraction of the max measured in the same run)")
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--backlog", type=int, default=20_000)
    p.add_argument("--max-from", choices=("backlog", "live"), default="backlog",
                   help="the maximum: the rate the worker drains a backlog at, or (live) the "
                   "rate it sustains while that is offered live, producer and broker on the "
                   "same machine")
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="seconds of the live offer (--max-from live); the first quarter is "
                   "not counted")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--customers", type=int, default=20_000,
                   help="customers of the simulated shop (the offered stream, and the backlog "
                   "the maximum is measured on)")
    p.add_argument("--max-customers", type=int, default=None,
                   help="customers of the maximum's backlog, when not --customers (before "
                   "2026-12-07's fourth round: 5,000 there, 20,000 in the offered stream)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait for late changes")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--producer-linger-ms", type=int, default=LINGER_MS,
                   help="linger of the producer offering the events (0: one request per event)")
    p.add_argument("--reader-fetch-wait-ms", type=int, default=READER_WAIT_MS,
                   help="fetch wait of the consumer reading the changes")
    p.add_argument("--domain-process", action="store_true",
                   help="the worker split in two processes (RETENTION_DOMAIN_PROCESS=on)")
    p.add_argument("--json")
    args = p.parse_args()
    work = H.tmpdir("bench-lat-")
    runs = [one_run(args, r, work) for r in range(args.runs)]
    print(f"\nmedians of {len(runs)} runs:")
    for k in ("backlog_max", "live_max", "max_rate", "rate", "offered", "p50", "p95", "p99",
              "max", "p99_first_third", "p99_last_third"):
        vals = [r[k] for r in runs if k in r]
        if vals:
            unit = " ms" if k.startswith("p") or k == "max" else " events/s"
            print(f"  {k:15} {H.median(vals):10,.0f}{unit}   runs: "
                  + ", ".join(f"{v:,.0f}" for v in vals))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
