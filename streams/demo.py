"""``python -m streams demo``: the whole system on one machine, with no external service.

It starts the embedded Kafka-protocol broker, creates the topics, starts a worker process,
feeds it the seeded shopper simulator at ``--rate`` events per second (with a few malformed
messages, to show dead letters), prints segment changes as they come out of
``segments.changes`` with their reason, and a live summary line every second:
events sent and processed per second, lag, dead letters, changes and the largest segments.
It stops everything cleanly on Ctrl-C or after ``--duration`` seconds, and says where the
worker's log is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from streams import topics as T
from streams.broker import EmbeddedBroker, free_port, stop_process
from streams.settings import Settings

__all__ = ["run_demo"]

_BAD_MESSAGES = (b"{not json", b'{"type": "teleported", "event_id": "x1"}', b"\xff\xfe\xfd")


def _summary(port: int) -> dict[str, Any] | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/retention/summary/")
    token = os.environ.get("RETENTION_WEB_TOKEN")      # the worker inherits it from us
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            return orjson.loads(r.read())
    except Exception:  # noqa: BLE001 - the worker is starting, or busy: try again later
        return None


def _describe(change: dict[str, Any]) -> str:
    reason = change.get("reason") or {}
    values = reason.get("values") or {}
    shown = ", ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in list(values.items())[:3])
    who = change["customer_id"] + (" (visitor)" if change.get("anonymous") else "")
    if change["type"] == "customer_forgotten":
        return f"{change['at'][:16]}  {who:22} forgotten"
    arrow = "+" if change["change"] == "entered" else "-"
    return (f"{change['at'][:16]}  {who:22} {arrow}{change['segment']:22} "
            f"[{change['trigger']}] {shown}")


def run_demo(rate: float = 500.0, duration: float | None = None, customers: int = 500,
             partitions: int = 4, quiet: bool = False, seed: int = 7, days: float = 365,
             bad_every: int = 500, out: Any = None) -> int:
    """Run the demo; return 0 when it ran and stopped cleanly, 1 if the worker failed."""
    from kafka import KafkaConsumer, TopicPartition

    from models.simulator import SimConfig, iter_events
    from streams.cli import create_all_topics, kafka_producer, produce_events

    out = out or sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="retention-demo-"))
    log_path = workdir / "worker.log"
    with EmbeddedBroker() as broker:
        web_port = free_port()
        env = dict(os.environ)
        env.update({
            "RETENTION_BROKER": broker.bootstrap, "RETENTION_EMBEDDED_BROKER": "1",
            "RETENTION_DATA_DIR": str(workdir / "worker-0"), "RETENTION_WEB_PORT": str(web_port),
            "RETENTION_PARTITIONS": str(partitions),
        })
        env.setdefault("RETENTION_CURRENCY_RATES", "USD=0.8")
        settings = Settings.from_env(env)
        create_all_topics(settings)
        say(f"broker {broker.bootstrap} ready; {partitions} partitions; starting a worker "
            f"(log: {log_path})")
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "streams", "worker", "-l", "info"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            return _feed(worker, settings, web_port, rate, duration, customers, seed, days,
                         bad_every, quiet, say, log_path, KafkaConsumer, TopicPartition,
                         SimConfig, iter_events, kafka_producer, produce_events)
        finally:
            stop_process(worker, 20, kill_wait=5)
            say(f"stopped: worker exit code {worker.returncode}, broker stopped; "
                f"worker log kept at {log_path}")


def _feed(worker, settings, web_port, rate, duration, customers, seed, days, bad_every, quiet,
          say, log_path, KafkaConsumer, TopicPartition, SimConfig, iter_events, kafka_producer,
          produce_events) -> int:
    started = time.monotonic()
    # ready = the group has given the worker its partitions (the embedded broker holds a
    # join for half the 6 s session timeout: the web views answer seconds before that)
    summary: dict[str, Any] = {}
    while not (summary := _summary(web_port) or {}).get("assigned"):
        if worker.poll() is not None:
            say(f"the worker exited with code {worker.returncode}; last lines of {log_path}:")
            say("\n".join(log_path.read_text(errors="replace").splitlines()[-20:]))
            return 1
        if time.monotonic() - started > 90:
            say(f"the worker did not get ready in 90 s; see {log_path}")
            return 1
        time.sleep(0.2)
    say(f"worker ready in {time.monotonic() - started:.1f} s, consuming partitions "
        f"{summary['assigned']} (web: http://127.0.0.1:{web_port}/); "
        f"feeding {customers} simulated shoppers at {rate:g} events/s")

    producer = kafka_producer(settings)
    consumer = KafkaConsumer(**settings.kafka_python_config(), enable_auto_commit=False)
    changes_topic = settings.topic(T.SEGMENT_CHANGES)
    tps = [TopicPartition(changes_topic, p) for p in range(settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)

    events = iter_events(SimConfig(n_customers=customers, days=days, seed=seed))
    sent = 0
    bad = 0
    exhausted = False
    changes = 0
    sizes: Counter[str] = Counter()
    t0 = time.monotonic()
    next_report = t0 + 1.0
    last_sent, last_processed, last_t = 0, 0, t0
    try:
        while duration is None or time.monotonic() - t0 < duration:
            if worker.poll() is not None:
                say(f"the worker stopped (exit code {worker.returncode}); see {log_path}")
                return 1
            due = int((time.monotonic() - t0) * rate) - sent - bad
            batch = []
            while due > 0 and not exhausted:
                if bad_every and (sent + bad + 1) % bad_every == 0:
                    batch.append(_BAD_MESSAGES[bad % len(_BAD_MESSAGES)])
                    bad += 1
                else:
                    try:
                        batch.append(next(events))
                    except StopIteration:
                        exhausted = True
                        say("the simulator has no more events; the clock keeps ticking")
                        break
                    sent += 1
                due -= 1
            if batch:
                produce_events(producer, batch, prefix=settings.topic_prefix)
                producer.flush()
            for records in consumer.poll(timeout_ms=50).values():
                for r in records:
                    change = orjson.loads(r.value)
                    changes += 1
                    if change.get("segment"):
                        sizes[change["segment"]] += 1 if change["change"] == "entered" else -1
                    if not quiet:
                        say(_describe(change))
            now = time.monotonic()
            if now >= next_report:
                s = _summary(web_port) or {}
                stats = s.get("stats", {})
                processed = stats.get("processed", 0) + stats.get("skipped", 0)
                dead = stats.get("dead_lettered", 0)
                dt = max(now - last_t, 1e-9)
                top = ", ".join(f"{k}={v}" for k, v in sizes.most_common(4))
                say(f"-- {now - t0:5.0f}s  sent {(sent - last_sent) / dt:6.0f}/s  processed "
                    f"{(processed - last_processed) / dt:6.0f}/s  lag {sent + bad - processed - dead:6d}  "
                    f"dead letters {dead}  changes {changes}  | {top}")
                last_sent, last_processed, last_t = sent, processed, now
                next_report = now + 1.0
    except KeyboardInterrupt:
        say("\ninterrupted: stopping")
    finally:
        producer.close()
        consumer.close()
    return 0
