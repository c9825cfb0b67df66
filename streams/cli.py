"""The non-worker commands of ``python -m streams`` (see ``streams/__main__.py``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from streams import topics as T
from streams.settings import Settings

__all__ = ["create_all_topics", "kafka_producer", "main", "produce_events"]

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- topics
def create_all_topics(settings: Settings) -> list[str]:
    """Create every topic of the catalogue with its final partition count and policy."""
    from streams.broker import create_topics

    specs = T.catalogue(settings.app_id)
    client = settings.kafka_python_config()      # security protocol, SASL, SSL
    bootstrap = ",".join(client.pop("bootstrap_servers"))
    create_topics(bootstrap,
                  [(settings.topic(s.name) if not s.name.startswith(settings.app_id) else s.name,
                    settings.partitions, s.all_configs()) for s in specs],
                  replication=settings.replication, **client)
    return [s.name for s in specs]


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    if args.create:
        names = create_all_topics(settings)
        print(f"{len(names)} topics ready on {settings.broker} "
              f"({settings.partitions} partitions each)")
        return 0
    for s in T.catalogue(settings.app_id):
        print(f"{s.name:45} key={s.key:40} cleanup={s.cleanup}")
    return 0


# --------------------------------------------------------------------------- produce
def _key_of(event: dict) -> str | None:
    key = event.get("customer_id") or event.get("anonymous_id")
    return key if isinstance(key, str) and key else None


def produce_events(producer: Any, events: Iterable[dict | bytes], topic: str | None = None,
                   prefix: str = "") -> Counter[str]:
    """Send events (dicts or raw JSON lines) routed by type and keyed by customer key.
    Returns counts by topic. Lines that are not JSON go to ``shop.clickstream`` unkeyed
    (the worker dead-letters them with the reason)."""
    counts: Counter[str] = Counter()
    for ev in events:
        if isinstance(ev, (bytes, bytearray)):
            raw = bytes(ev)
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
        else:
            obj, raw = ev, orjson.dumps(ev)
        if isinstance(obj, dict):
            dest = topic or T.topic_for_event_type(str(obj.get("type")))
            key = _key_of(obj)
        else:
            dest, key = topic or T.CLICKSTREAM, None
        if prefix:
            dest = prefix + dest
        producer.send(dest, key=key.encode("utf-8") if key else None, value=raw)
        counts[dest] += 1
    producer.flush()
    return counts


def _read_jsonl(path: str) -> Iterator[bytes]:
    fh = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    try:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def kafka_producer(settings: Settings, **extra: Any) -> Any:
    from kafka import KafkaProducer

    conf = settings.kafka_python_config()
    conf.setdefault("linger_ms", 5)
    # batches of several records on the embedded broker too: nothing reads an input topic's
    # end from ListOffsets, which Tansu gets wrong for them (the worker's lag and backlog
    # come from fetch high-water marks, table recovery and `tail` correct it); one record
    # per batch sent 3,100-3,500 events/s against 10,000-10,400 batched (docs/OPERATIONS.md)
    conf.update(extra)
    return KafkaProducer(**conf)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    producer = kafka_producer(settings)
    t0 = time.monotonic()
    try:
        counts = produce_events(producer, _read_jsonl(args.file), topic=args.topic,
                                prefix=settings.topic_prefix if args.topic is None else "")
    finally:
        producer.close()
    n = sum(counts.values())
    dt = time.monotonic() - t0
    print(f"sent {n} events in {dt:.1f}s ({n / dt if dt else 0:.0f}/s): "
          + ", ".join(f"{t}={c}" for t, c in sorted(counts.items())))
    return 0


# --------------------------------------------------------------------------- tail
def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_python_config(), enable_auto_commit=False)
    parts = consumer.partitions_for_topic(args.topic)
    if not parts:
        print(f"no such topic: {args.topic}", file=sys.stderr)
        return 1
    tps = [TopicPartition(args.topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    if args.from_beginning:
        consumer.seek_to_beginning(*tps)
    elif settings.embedded_broker:    # its ListOffsets is short after a batch of several
        from streams.embedded_offsets import seek_to_true_end

        seek_to_true_end(consumer, tps)
    else:
        consumer.seek_to_end(*tps)
    n = 0
    try:
        while args.max is None or n < args.max:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    key = r.key.decode("utf-8", "replace") if r.key else None
                    value = r.value.decode("utf-8", "replace") if r.value else None
                    print(f"{r.partition}@{r.offset} {key} {value}", flush=True)
                    n += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


# --------------------------------------------------------------------------- broker
def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.broker import main as broker_main

    return broker_main([] if args.port is None else ["--port", str(args.port)])


# --------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from streams.demo import run_demo  # type: ignore[import-not-found]
    except ImportError:
        print("the demo is not implemented yet (streams/demo.py); see docs/OPERATIONS.md "
              "for the manual steps: broker, topics --create, worker, produce", file=sys.stderr)
        return 2
    return int(run_demo(rate=args.rate, duration=args.duration, customers=args.customers,
                        partitions=settings.partitions, quiet=args.quiet))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("topics", help="print or create the topic catalogue")
    p.add_argument("--create", action="store_true")
    p = sub.add_parser("produce", help="send a JSONL file of events")
    p.add_argument("file", help="JSONL file ('-' for stdin)")
    p.add_argument("--topic", default=None, help="send everything to this topic")
    p = sub.add_parser("tail", help="print the records of a topic")
    p.add_argument("topic")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--max", type=int, default=None, help="stop after N records")
    p = sub.add_parser("broker", help="run the embedded broker")
    p.add_argument("--port", type=int, default=None)
    p = sub.add_parser("demo", help="embedded broker + worker + simulator")
    p.add_argument("--rate", type=float, default=500.0, help="events per second")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    p.add_argument("--customers", type=int, default=500)
    p.add_argument("--quiet", action="store_true", help="summary lines only")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    handler = {"topics": cmd_topics, "produce": cmd_produce, "tail": cmd_tail,
               "broker": cmd_broker, "demo": cmd_demo}[args.command]
    return handler(args, settings)

