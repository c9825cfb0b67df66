"""Clear messages for misconfiguration, before a worker (or a command) starts.

A worker that cannot reach its broker retries forever with "Unable to connect to node"
warnings; a taken web port ends in an ``OSError`` traceback deep in aiohttp; a bad
definitions file in a ``DefinitionError`` traceback. :func:`preflight` checks these up front
and returns :class:`Problem` s that say what is wrong *and what to do*; :func:`explain`
turns the same failures into those messages when they surface as exceptions.

    python -m streams.web.preflight            # checks the RETENTION_* settings, exit 1 on errors

>>> p = check_definitions("/nonexistent/segments.toml")
>>> p.what.startswith("segment definitions"), "RETENTION_SEGMENTS" in p.fix
(True, True)
>>> import socket
>>> s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); port = s.getsockname()[1]
>>> check_port("127.0.0.1", port).what.endswith("is already in use")
True
>>> s.close(); check_port("127.0.0.1", port) is None
True
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Problem", "check_broker", "check_data_dir", "check_definitions", "check_port",
           "check_topics", "explain", "main", "preflight", "report"]


@dataclass(frozen=True)
class Problem:
    """One misconfiguration: what is wrong and what to do about it."""

    check: str
    what: str
    fix: str
    fatal: bool = True

    def __str__(self) -> str:
        mark = "error" if self.fatal else "warning"
        return f"{mark}: {self.what}\n  what to do: {self.fix}"


def _hostport(addr: str) -> tuple[str, int]:
    addr = addr.strip().removeprefix("kafka://")
    host, _, port = addr.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port or 9092)


def check_broker(settings: Any, timeout: float = 3.0) -> Problem | None:
    """The broker answers: a TCP connection to some bootstrap address, then a Metadata
    request (kafka-python)."""
    addrs = settings.bootstrap_list
    reasons = []
    reachable = False
    for addr in addrs:
        try:
            host, port = _hostport(addr)
        except ValueError:
            return Problem("broker", f"RETENTION_BROKER has a bad address {addr!r}",
                           "use host:port[,host:port...], e.g. 127.0.0.1:9092")
        try:
            with socket.create_connection((host, port), timeout=timeout):
                reachable = True
                break
        except OSError as exc:
            reasons.append(f"{addr}: {exc.strerror or exc}")
    if not reachable:
        return Problem(
            "broker", f"cannot reach the Kafka broker at {settings.broker} "
                      f"({'; '.join(reasons)})",
            "start the broker (for a local run: `python -m streams broker --port PORT` and "
            "RETENTION_BROKER=127.0.0.1:PORT), or point RETENTION_BROKER at a running one; "
            "check firewalls and RETENTION_SECURITY_PROTOCOL")
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(**settings.kafka_python_config(),
                                 request_timeout_ms=int(timeout * 1000),
                                 client_id="retention-preflight")
        try:
            admin.list_topics()
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - any failure is the message
        return Problem(
            "broker", f"the broker at {settings.broker} accepts connections but does not "
                      f"answer Kafka requests ({type(exc).__name__}: {exc})",
            "check that it is a Kafka broker and that RETENTION_SECURITY_PROTOCOL / SASL / SSL "
            "settings match its listener")
    return None


def check_topics(settings: Any, timeout: float = 5.0) -> Problem | None:
    """The input topics exist with ``RETENTION_PARTITIONS`` partitions (co-partitioning)."""
    from kafka import KafkaConsumer

    from streams import topics as T

    consumer = KafkaConsumer(**settings.kafka_python_config(),
                             allow_auto_create_topics=False,  # a check must not create them
                             request_timeout_ms=int(timeout * 1000) + 1000)
    try:
        missing, wrong = [], []
        for t in (*T.INPUT_TOPICS, T.CLOCK_TOPIC):
            name = settings.topic(t)
            parts = consumer.partitions_for_topic(name)
            if not parts:
                missing.append(name)
            elif len(parts) != settings.partitions:
                wrong.append(f"{name} has {len(parts)}")
    finally:
        consumer.close()
    if missing:
        return Problem("topics", f"topics missing on {settings.broker}: {', '.join(missing)}",
                       "create the topic catalogue with its partition counts: "
                       "`python -m streams topics --create` (same RETENTION_* settings)")
    if wrong:
        return Problem("topics", f"partition counts differ from RETENTION_PARTITIONS="
                                 f"{settings.partitions}: {', '.join(wrong)}",
                       "every input topic, the clock topic and the tables must have the same "
                       "count (co-partitioning): set RETENTION_PARTITIONS to the topics' count, "
                       "or recreate the topics")
    return None


def check_port(bind: str, port: int) -> Problem | None:
    """The web port is free on the bind address."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return Problem(
                    "web", f"web port {port} on {bind} is already in use",
                    f"another worker (or program) listens there: give each worker on a host "
                    f"its own RETENTION_WEB_PORT, or stop the other one (`ss -ltnp | grep "
                    f":{port}` shows it)")
            if exc.errno == errno.EADDRNOTAVAIL:
                return Problem("web", f"cannot bind the web server to {bind}: not an address "
                                      f"of this host",
                               "set RETENTION_WEB_BIND to 127.0.0.1 (the default) or to an "
                               "address of this host")
            if exc.errno == errno.EACCES:
                return Problem("web", f"no permission to bind port {port}",
                               "use a port above 1024 in RETENTION_WEB_PORT")
            return Problem("web", f"cannot bind {bind}:{port}: {exc.strerror}",
                           "check RETENTION_WEB_BIND and RETENTION_WEB_PORT")
    return None


def check_definitions(path: str | os.PathLike[str] | None = None) -> Problem | None:
    """The segment definitions (``RETENTION_SEGMENTS`` or the built-in file) load."""
    from models.segments import DefinitionError, load_catalog

    try:
        load_catalog(path)
    except DefinitionError as exc:
        where = path or os.environ.get("RETENTION_SEGMENTS") or "the built-in models/segments.toml"
        return Problem(
            "definitions", f"segment definitions are not valid: {exc}",
            f"fix {where} (or point RETENTION_SEGMENTS at a valid file); try a change first "
            f"with `python -m models.whatif --definitions NEW.toml EVENTS.jsonl`, which "
            f"validates it and shows who would enter and leave each segment")
    return None


def check_data_dir(settings: Any) -> Problem | None:
    """The data directory can be created and written (RocksDB keeps the tables there)."""
    if not str(settings.store).startswith("rocksdb"):
        return None
    d = Path(settings.data_dir).absolute()
    existing = d
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent           # the worker will create the rest
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return None
    return Problem("data_dir", f"cannot write the data directory {d} ({existing} is not a "
                               f"writable directory)",
                   "set RETENTION_DATA_DIR to a writable directory, one per worker (workers "
                   "must not share RocksDB directories)")


def preflight(settings: Any, *, broker: bool = True, topics: bool = True, web: bool = True,
              definitions: bool = True) -> list[Problem]:
    """Every check that applies to ``settings``; an empty list means go."""
    problems: list[Problem] = []
    if definitions and (p := check_definitions()) is not None:
        problems.append(p)
    if web and getattr(settings, "web_enabled", True) and (
            p := check_port(settings.web_bind, settings.web_port)) is not None:
        problems.append(p)
    if (p := check_data_dir(settings)) is not None:
        problems.append(p)
    if broker:
        p = check_broker(settings)
        if p is not None:
            problems.append(p)
        elif topics and (p := check_topics(settings)) is not None:
            problems.append(p)
    return problems


def explain(exc: BaseException, settings: Any = None) -> str | None:
    """The operator message for an exception raised while starting, or None if unknown."""
    from models.segments import DefinitionError

    if isinstance(exc, DefinitionError):
        p = Problem("definitions", f"segment definitions are not valid: {exc}",
                    "fix the file (RETENTION_SEGMENTS) and check it with `python -m "
                    "models.whatif --definitions FILE EVENTS.jsonl`")
        return str(p)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        port = getattr(settings, "web_port", "?")
        return str(Problem("web", f"web port {port} is already in use",
                           "give each worker its own RETENTION_WEB_PORT"))
    name = type(exc).__name__
    if name in ("KafkaConnectionError", "NoBrokersAvailable", "KafkaTimeoutError") or (
            isinstance(exc, ConnectionRefusedError)):
        broker = getattr(settings, "broker", "RETENTION_BROKER")
        return str(Problem("broker", f"cannot reach the Kafka broker at {broker} ({name})",
                           "start it, or set RETENTION_BROKER to a running one"))
    return None


def report(problems: list[Problem], out: Any = None) -> int:
    """Print the problems; return the exit status (1 when one is fatal)."""
    out = out or sys.stderr
    for p in problems:
        print(str(p), file=out)
    return 1 if any(p.fatal for p in problems) else 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    from streams.settings import Settings

    ap = argparse.ArgumentParser(prog="python -m streams.web.preflight",
                                 description="check the RETENTION_* settings before a worker "
                                             "starts")
    ap.add_argument("--no-broker", action="store_true", help="skip the broker and topics")
    ap.add_argument("--no-web", action="store_true", help="skip the web port")
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    problems = preflight(settings, broker=not args.no_broker, web=not args.no_web)
    if not problems:
        print(f"ok: broker {settings.broker}, web {settings.web_bind}:{settings.web_port}, "
              f"{settings.partitions} partitions, definitions valid")
    return report(problems)


if __name__ == "__main__":
    raise SystemExit(main())
