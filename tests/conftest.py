"""Shared fixtures: ONE embedded broker per test session, worker processes, topic helpers.

The embedded broker (Tansu) keeps everything in memory and never compacts, so a session
starts a fresh one and always stops it. Tests isolate themselves with unique topic and app
names (``unique`` fixture) instead of restarting the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture(scope="session")
def broker() -> Iterator[object]:
    """The session's embedded broker (``broker.bootstrap`` is ``host:port``)."""
    from streams.broker import EmbeddedBroker

    log = Path(tempfile.gettempdir()) / f"tansu-test-{os.getpid()}.log"
    b = EmbeddedBroker(log_path=log)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic / app names of one test."""
    return uuid.uuid4().hex[:8]


def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    from streams.broker import create_topics as _create

    _create(bootstrap, topics)


class Worker:
    """A Faust worker in its own process (``python -m MODULE worker``), log to a file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path, name: str) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    def start(self) -> Worker:
        full_env = dict(os.environ)
        full_env.update(self.env)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen([PYTHON, "-m", self.module, "worker", "-l", "info"],
                                     cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0, count: int = 1) -> float:
        """Wait for the ``count``-th "Worker ready" line; returns seconds since start."""
        assert self.proc is not None and self.started_at is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count("Worker ready") >= count:
                return time.monotonic() - self.started_at
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}\n"
                                     f"{self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} not ready after {timeout}s\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (Faust's clean shutdown: commit, flush), then SIGKILL."""
        from streams.broker import stop_process

        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout)
        self._log.close()
        return code

    def tail(self, n: int = 120) -> str:
        lines = self.log().splitlines()
        return f"--- worker {self.name} log ({self.log_path}) ---\n" + "\n".join(lines[-n:])


@pytest.fixture
def workers(broker: object, tmp_path: Path, request: pytest.FixtureRequest,
            ) -> Iterator[Callable[..., Worker]]:
    """Factory ``workers(module, env, name=...)`` for worker processes; every worker is
    stopped at the end, and their logs (and the broker's) are printed when the test fails."""
    started: list[Worker] = []

    def make(module: str, env: dict[str, str], name: str | None = None) -> Worker:
        name = name or f"w{len(started)}"
        w = Worker(module, env, tmp_path / f"{name}.log", name)
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for w in started:
            sys.stderr.write(w.tail() + "\n")
        sys.stderr.write("--- broker log tail ---\n" + broker.log_tail(4000) + "\n")  # type: ignore[attr-defined]


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def worker_env(bootstrap: str, app_id: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker process on the embedded broker."""
    from streams.broker import free_port

    env = {
        "RETENTION_BROKER": bootstrap,
        "RETENTION_APP_ID": app_id,
        "RETENTION_EMBEDDED_BROKER": "1",
        "RETENTION_DATA_DIR": str(data_dir),
        "RETENTION_WEB_PORT": str(free_port()),
        "RETENTION_PARTITIONS": "4",
        # models off unless a test asks: a crash restores models from a snapshot taken on a
        # wall-clock interval, so scores (not the facts) after a restart legitimately differ
        "RETENTION_MODELS": "0",
    }
    env.update(extra)
    if (os.environ.get("RETENTION_TEST_DOMAIN_PROCESS")
            and not env.get("RETENTION_STORE", "rocksdb://").startswith("memory")):
        # the whole suite's workers in two processes (streams/split.py; RocksDB only)
        env.setdefault("RETENTION_DOMAIN_PROCESS", "1")
    return env


# --------------------------------------------------------------------------- broker I/O helpers
def produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]],
                headers: list[list[tuple[str, bytes]]] | None = None,
                partition: int | None = None) -> list[tuple[int, int]]:
    """Send (key, value) records with kafka-python (to ``partition`` if given, else by key);
    returns their (partition, offset)."""
    from kafka import KafkaProducer

    # batch_size=1: one record per produce batch (Tansu's ListOffsets is wrong for
    # multi-record batches, see BROKER.md)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=1,
                             max_request_size=4 * 1024 * 1024)
    try:
        futures = []
        for i, (key, value) in enumerate(records):
            h = headers[i] if headers else None
            if key is None:
                futures.append(producer.send(topic, key=None, value=value, partition=0,
                                             headers=h))
            else:
                futures.append(producer.send(topic, key=key, value=value, headers=h,
                                             partition=partition))
        producer.flush()
        out = []
        for f in futures:
            md = f.get(timeout=30)
            out.append((md.partition, md.offset))
        return out
    finally:
        producer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The true end of each partition of ``topic``: Tansu's ListOffsets is short when the
    last batch holds several records, so each non-empty partition is also fetched from its
    reported end minus one and the high-water mark of that answer is taken
    (``streams.embedded_offsets.seek_to_true_end``, kafka-python; the worker's own correction
    is a separate aiokafka one, and tests/test_embedded_offsets.py checks that they agree)."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.embedded_offsets import seek_to_true_end

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      fetch_max_wait_ms=500)
    try:
        parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {}
        c.assign(tps)
        return {tp.partition: off for tp, off in seek_to_true_end(c, tps, strict=True).items()}
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offsets on ``topic`` (OffsetFetch; the group is not joined)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        return {p: c.committed(TopicPartition(topic, p)) for p in sorted(parts)}
    finally:
        c.close()


def wait_committed(bootstrap: str, group: str, topic: str, timeout: float = 90.0,
                   workers_: list[Worker] | None = None) -> float:
    """Wait until the group committed the end of every partition of ``topic``."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    ends = end_offsets(bootstrap, topic)
    last = None
    while time.monotonic() < deadline:
        last = committed_offsets(bootstrap, group, topic)
        if all(last.get(p) is not None and last[p] >= end for p, end in ends.items()
               if end > 0):
            return time.monotonic() - t0
        for w in workers_ or []:
            if not w.alive():
                raise AssertionError(f"worker {w.name} died\n{w.tail()}")
        time.sleep(0.3)
    logs = "\n".join(w.tail(60) for w in workers_ or [])
    raise AssertionError(f"group {group} did not commit {topic} ends {ends} "
                         f"(committed {last}) in {timeout}s\n{logs}")


def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of ``topic`` up to its current end (kafka-python ConsumerRecords)."""
    from kafka import KafkaConsumer, TopicPartition

    ends = end_offsets(bootstrap, topic)
    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024)
    out = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(c.position(tp) >= ends[tp.partition] for tp in tps):
                break
            for records in c.poll(timeout_ms=300).values():
                out.extend(records)
    finally:
        c.close()
    return out


def table_from_changelog(bootstrap: str, topic: str) -> dict[str, dict]:
    """The final table content: last value per key of a changelog, tombstones applied."""
    import orjson

    table: dict[str, dict] = {}
    for r in sorted(read_topic(bootstrap, topic), key=lambda r: (r.partition, r.offset)):
        if r.key.startswith(b"\x00"):
            continue   # the partition meta under its reserved key, not a customer
        key = r.key.decode()
        if r.value is None:
            table.pop(key, None)
        else:
            table[key] = orjson.loads(r.value)
    return table


def replay(lines: list[bytes], partitions: int = 4,
           models: bool = False) -> tuple[list[dict], dict[str, dict]]:
    """Offline replay through the engine, split like Kafka: (changes, final states).

    One engine per partition, each seeing only its own partition's keys: what the streaming
    shell does today. (``models.replay.Replay`` also hands an anonymous visitor's state over
    from another partition when they log in; the shell does not do that cross-partition
    hand-over yet, see docs/OPERATIONS.md.)
    """
    from models.contract import ContractError, event_key, parse_event
    from models.engine import Engine, ProcessingError
    from models.partitioning import partition_for
    from models.segments import load_catalog

    catalog = load_catalog()
    if models:   # one hub per partition, as the worker keeps them
        from models.scoring import ModelHub
        engines = [Engine(catalog=catalog, scorer=ModelHub()) for _ in range(partitions)]
    else:
        engines = [Engine(catalog=catalog) for _ in range(partitions)]
    changes: list[dict] = []
    for line in lines:
        try:
            event = parse_event(line)
            changes.extend(engines[partition_for(event_key(event), partitions)].process(event))
        except (ContractError, ProcessingError):
            continue
    states = {k: s.to_dict() for e in engines for k, s in e.store.items()}
    return changes, states


def comparable(state: dict) -> dict:
    """A state without the fields that only the streaming shell sets."""
    return {k: v for k, v in state.items() if k != "positions"}


def simulated_lines(customers: int = 60, days: float = 60, seed: int = 3) -> list[bytes]:
    import orjson

    from models.simulator import SimConfig, simulate

    cfg = SimConfig(n_customers=customers, days=days, seed=seed,
                    anonymous_visitors=max(1, customers // 5))
    return [orjson.dumps(e) for e in simulate(cfg).events]


def key_of(line: bytes) -> bytes:
    import orjson

    d = orjson.loads(line)
    return (d.get("customer_id") or d.get("anonymous_id")).encode()
