"""Shared pieces of the broker benchmarks: a fresh embedded broker, event streams, a fast
producer, consumer subprocesses that report their own timings, and medians.

Every consumer under test runs in its own process (``python -m bench._apps KIND``) and writes
one JSON line to ``$BENCH_RESULT`` when it has consumed ``$BENCH_N`` input events:
``{"kind", "n", "first", "last", "rate", ...}`` where ``first``/``last`` are wall-clock
times of the first and the last event it handled, and ``rate = (n - 1) / (last - first)``.
Start-up (group join, table recovery) is therefore not counted, for any of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.clock import format_time, parse_time  # noqa: E402
from streams import topics as T  # noqa: E402

PYTHON = sys.executable
PARTITIONS = 4
START = parse_time("2025-01-01T00:00:00Z")


# --------------------------------------------------------------------------- broker
@contextmanager
def fresh_broker(log_dir: Path) -> Iterator[Any]:
    """A new memory-only broker for one measurement (Tansu never frees memory)."""
    from streams.broker import EmbeddedBroker

    b = EmbeddedBroker(log_path=log_dir / f"tansu-{uuid.uuid4().hex[:6]}.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def settings_for(bootstrap: str, app_id: str, data_dir: Path, prefix: str = "b.", **kw: Any) -> Any:
    from streams.broker import free_port
    from streams.settings import Settings

    return Settings(broker=bootstrap, app_id=app_id, topic_prefix=prefix, partitions=PARTITIONS,
                    data_dir=str(data_dir), embedded_broker=True, web_port=free_port(), **kw)


def create_topics(settings: Any) -> None:
    from streams.cli import create_all_topics

    create_all_topics(settings)


def env_of(settings: Any, **extra: str) -> dict[str, str]:
    env = {
        "RETENTION_BROKER": settings.broker, "RETENTION_APP_ID": settings.app_id,
        "RETENTION_TOPIC_PREFIX": settings.topic_prefix,
        "RETENTION_PARTITIONS": str(settings.partitions),
        "RETENTION_DATA_DIR": settings.data_dir, "RETENTION_EMBEDDED_BROKER": "1",
        "RETENTION_WEB_PORT": str(settings.web_port), "RETENTION_STORE": settings.store,
        "RETENTION_LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


# --------------------------------------------------------------------------- events
def simulator_events(n: int, customers: int, seed: int = 1) -> list[dict]:
    """Realistic, bursty traffic (sessions of a few to tens of events): the first ``n``
    events of the shopper simulator."""
    from models.simulator import SimConfig, iter_events

    days = 30.0
    out: list[dict] = []
    while len(out) < n:
        out = []
        for ev in iter_events(SimConfig(n_customers=customers, days=days, seed=seed,
                                        anonymous_visitors=customers // 10)):
            out.append(ev)
            if len(out) >= n:
                break
        days *= 2
    return out


def uniform_events(n: int, customers: int, seed: int = 1) -> list[dict]:
    """The stress stream: every event for a uniformly random customer, event time moving
    one second on average, mostly browsing with 5% orders (no sessions to speak of)."""
    rnd = random.Random(seed)
    out = []
    t = START
    for i in range(n):
        t += rnd.expovariate(1.0)
        who = f"u{rnd.randrange(customers)}"
        base = {"event_id": f"s-{seed}-{i}", "schema_version": "1", "occurred_at": format_time(t),
                "customer_id": who}
        r = rnd.random()
        if r < 0.05:
            total = round(rnd.uniform(10, 200), 2)
            ev = dict(base, type="order_completed", order_id=f"o-{seed}-{i}", currency="GBP",
                      subtotal=total, discount=0.0, shipping=0.0, tax=0.0, total=total,
                      lines=[{"product_id": f"p{rnd.randrange(400)}", "quantity": 1,
                              "price": total, "list_price": total}])
        elif r < 0.15:
            ev = dict(base, type="product_added", product_id=f"p{rnd.randrange(400)}",
                      quantity=1, price=20.0, list_price=20.0, cart_id=f"c-{who}")
        elif r < 0.45:
            ev = dict(base, type="product_viewed", product_id=f"p{rnd.randrange(400)}",
                      price=20.0)
        else:
            ev = dict(base, type="page_view", url="https://shop.example/x", path="/x",
                      page_type="category")
        out.append(ev)
    return out


def records(events: list[dict], prefix: str, routed: bool = False,
            ) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value): all on ``shop.clickstream`` (the worker accepts any type on any
    input topic), or routed by type like the shop's producers (``routed``)."""
    out = []
    for ev in events:
        key = (ev.get("customer_id") or ev["anonymous_id"]).encode()
        topic = T.topic_for_event_type(ev["type"]) if routed else T.CLICKSTREAM
        out.append((prefix + topic, key, orjson.dumps(ev)))
    return out


def produce(bootstrap: str, recs: list[tuple[str, bytes, bytes]]) -> float:
    """Send everything with aiokafka (batched: input topics are never read with
    ListOffsets by the code under test); returns msgs/s."""
    from aiokafka import AIOKafkaProducer

    async def go() -> float:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
        await p.start()
        t0 = time.perf_counter()
        try:
            batch = []
            for topic, key, value in recs:
                batch.append(await p.send(topic, key=key, value=value))
                if len(batch) >= 5000:
                    await asyncio.gather(*batch)
                    batch = []
            await asyncio.gather(*batch)
        finally:
            await p.stop()
        return len(recs) / (time.perf_counter() - t0)

    return asyncio.run(go())


def input_topics(prefix: str) -> list[str]:
    return [prefix + t for t in T.INPUT_TOPICS]


# --------------------------------------------------------------------------- consumers
class Consumer:
    """One consumer process under test (``python -m bench._apps KIND ...``)."""

    def __init__(self, kind: str, env: dict[str, str], n: int, workdir: Path,
                 name: str | None = None, faust: bool = True) -> None:
        self.kind = kind
        self.name = name or kind
        self.result_path = workdir / f"{self.name}-{uuid.uuid4().hex[:6]}.json"
        self.log_path = workdir / f"{self.name}.log"
        self.env = dict(os.environ)
        self.env.update(env)
        self.env.update({"BENCH_KIND": kind, "BENCH_N": str(n),
                         "BENCH_RESULT": str(self.result_path),
                         "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        args = [PYTHON, "-m", "bench._apps"]
        if faust:
            args += ["worker", "-l", "warn"]
        spy = os.environ.get("BENCH_PYSPY")   # a folder: profile each consumer into it
        if spy:                                # (bench/profile_summary.py reads the files)
            Path(spy).mkdir(parents=True, exist_ok=True)
            out = Path(spy) / f"{self.name}-{uuid.uuid4().hex[:6]}.speedscope.json"
            py_spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or "py-spy"
            args = [py_spy, "record", "-f", "speedscope", "-r", "200", "--threads", "--idle",
                    "-o", str(out), "--", *args]
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Consumer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.started = time.time()
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    def result(self) -> dict | None:
        try:
            text = self.result_path.read_text()
        except OSError:
            return None
        return json.loads(text) if text.strip() else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def stop(self) -> None:
        from streams.broker import stop_process

        if self.proc is None:
            return
        if os.environ.get("BENCH_PYSPY") and self.proc.poll() is None:
            # stop py-spy's child, so that py-spy sees it exit and writes its profile
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            for pid in children.read_text().split() if children.exists() else ():
                os.kill(int(pid), 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        stop_process(self.proc, 20)
        self._log.close()


def wait_total(consumers: list[Consumer], n: int, timeout: float) -> list[dict]:
    """Wait until the consumers together handled ``n`` events; their last results."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = [c.result() for c in consumers]
        done = sum(r["n"] for r in results if r)
        if done >= n:
            time.sleep(0.3)                      # let every publisher write its final figures
            return [r for r in (c.result() for c in consumers) if r]
        for c in consumers:
            if not c.alive():
                raise RuntimeError(f"{c.name} exited\n{c.tail()}")
        time.sleep(0.1)
    got = [c.result() for c in consumers]
    raise RuntimeError(f"no result within {timeout}s: {got}\n"
                       + "\n".join(c.tail() for c in consumers))


def run_consumers(consumers: list[Consumer], n: int, timeout: float) -> dict:
    """Start them together (a group of workers), wait until they handled ``n`` events,
    stop them; their combined figures."""
    try:
        for c in consumers:
            c.start()
        return combine(wait_total(consumers, n, timeout))
    finally:
        for c in consumers:
            c.stop()


def combine(results: list[dict]) -> dict:
    """Several workers of one group: total events over the span first..last of all."""
    first = min(r["first"] for r in results)
    last = max(r["last"] for r in results)
    n = sum(r["n"] for r in results)
    return {"n": n, "first": first, "last": last, "rate": (n - 1) / max(last - first, 1e-9),
            "parts": results}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
