"""The embedded broker launcher (streams/broker.py) and the session broker fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.broker import BrokerError, EmbeddedBroker, create_topics, free_port

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parent.parent


def test_session_broker_round_trip(broker: EmbeddedBroker, unique: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = f"t-{unique}"
    create_topics(broker.bootstrap, {topic: 4})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(20):
        producer.send(topic, key=f"k{i % 5}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in range(4)])
    values = sorted(int(m.value) for m in consumer)
    consumer.close()
    assert values == list(range(20))


def test_create_topics_is_idempotent_and_keeps_partitions(broker: EmbeddedBroker,
                                                          unique: str) -> None:
    from kafka import KafkaConsumer

    topic = f"c-{unique}"
    create_topics(broker.bootstrap, [(topic, 3, {"cleanup.policy": "compact"})])
    create_topics(broker.bootstrap, {topic: 3})
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        consumer.close()


def test_start_stop_context_manager(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    with EmbeddedBroker(log_path=log) as b:
        assert b.alive()
        assert b.started_in is not None and b.started_in < 10
        proc = b.proc
    assert proc is not None and proc.poll() is not None
    assert b.stop() is None  # stopping twice is harmless


def test_failed_start_shows_the_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-broker"
    fake.write_text("#!/bin/sh\necho 'fake broker: cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match="cannot bind"):
        EmbeddedBroker(binary=str(fake), log_path=tmp_path / "f.log", ready_timeout=3).start()


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "a.log") as a:
        b = EmbeddedBroker(port=a.port, log_path=tmp_path / "b.log", ready_timeout=3)
        # the second broker cannot bind: either it exits or it never answers Metadata
        # as a *new* broker; it must not be left running either way
        try:
            b.start()
        except BrokerError:
            pass
        finally:
            b.stop()
        assert not b.alive()


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streams.broker", "--port", str(port),
                             "--log", str(tmp_path / "cli.log")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert f"127.0.0.1:{port}" in line, line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the broker child is gone too
    time.sleep(0.2)
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_broker_dies_with_the_process_that_started_it(tmp_path):
    """A test run or demo killed without its clean-up (SIGKILL) leaves no broker behind."""
    script = tmp_path / "start.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from streams.broker import EmbeddedBroker\n"
        "b = EmbeddedBroker(); b.__enter__()\n"
        "print(b.proc.pid, flush=True)\n"
        "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        broker_pid = int(parent.stdout.readline())
        os.kill(broker_pid, 0)                                 # running
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(broker_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(broker_pid, signal.SIGKILL)
            raise AssertionError("the broker outlived the process that started it")
    finally:
        if parent.poll() is None:
            parent.kill()
