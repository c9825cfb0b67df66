"""The offline commands as a user runs them: replay (deterministic to the byte, summary with
rejects by reason) and what-if (a bad definitions file is refused; a changed threshold shows
who would enter and leave)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from models.segments import DEFAULT_CATALOG_PATH
from models.simulator import SimConfig, simulate

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def events_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    sim = simulate(SimConfig(n_customers=150, days=150, seed=5))
    lines = [orjson.dumps(e) for e in sim.events]
    # bad lines among the good ones: each must be counted with its reason
    lines[10:10] = [b"{not json", b'{"type": "teleported", "event_id": "x"}', b"\xff\xfe",
                    b'{"event_id": "n1", "type": "product_added", "occurred_at": "2025-02-01T10:00:00",'
                    b' "schema_version": "1", "customer_id": "c", "product_id": "p", "quantity": 1, "price": 2}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_replay_is_deterministic_to_the_byte_and_counts_rejects(events_file, tmp_path):
    outs = []
    for i in range(2):
        out, summary = tmp_path / f"changes{i}.jsonl", tmp_path / f"summary{i}.json"
        r = cli("models.replay", str(events_file), "--out", str(out), "--summary", str(summary),
                "--until", "2025-12-31T00:00:00Z")
        assert r.returncode == 0, r.stderr.decode()
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") > 100
    s = json.loads(summary.read_text())
    assert s["rejected"] == 4
    reasons = " | ".join(s["rejected_by_reason"])
    for stage in ("json", "unknown_type", "utf8", "schema: occurred_at"):
        assert stage in reasons, reasons
    assert s["lines"] == sum(s["events_by_type"].values()) + s["rejected"]
    assert sum(v for k, v in s["changes_by_segment"].items()) == outs[0].count(b"\n")


def test_replay_split_over_partitions_gives_the_same_changes(events_file, tmp_path):
    one, four = tmp_path / "one.jsonl", tmp_path / "four.jsonl"
    until = ("--until", "2025-12-31T00:00:00Z")   # every partition's timers up to the same time
    assert cli("models.replay", str(events_file), "--out", str(one), "--summary", str(tmp_path / "s1"),
               *until).returncode == 0
    assert cli("models.replay", str(events_file), "--out", str(four), "--partitions", "4",
               "--summary", str(tmp_path / "s4"), *until).returncode == 0
    ids = lambda p: sorted(json.loads(x)["event_id"] for x in p.read_text().splitlines())  # noqa: E731
    # per-key facts do not depend on how keys are spread over partitions (no models here)
    assert ids(one) == ids(four)


def test_whatif_refuses_a_bad_definitions_file(events_file, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"\n[segments.vip]\nenter = "__import__(\'os\').system(\'true\')"\nexit = "orders < 1"\n')
    r = cli("models.whatif", "--definitions", str(bad), str(events_file))
    assert r.returncode == 2
    assert b"not valid" in r.stderr and b"vip" in r.stderr


def test_whatif_shows_who_would_enter_and_leave(events_file, tmp_path):
    new = tmp_path / "new.toml"
    text = DEFAULT_CATALOG_PATH.read_text()
    text = text.replace('enter = "net_orders >= 2"', 'enter = "net_orders >= 3"')
    text = text.replace('exit = "net_orders < 2"', 'exit = "net_orders < 3"')
    new.write_text(text.replace('version = "2026.11.1"', 'version = "test-2"'))
    r = cli("models.whatif", "--definitions", str(new), str(events_file), "--json")
    assert r.returncode == 0, r.stderr.decode()
    rows = {row["segment"]: row for row in json.loads(r.stdout)["segments"]}
    repeat = rows["repeat"]
    assert repeat["status"] == "changed"
    assert repeat["would_leave"] > 0 and repeat["would_enter"] == 0
    assert repeat["members_new"] == repeat["members_current"] - repeat["would_leave"]
    assert all(row["status"] == "same" and row["would_enter"] == row["would_leave"] == 0
               for name, row in rows.items() if name != "repeat")


def test_worker_keeps_the_root_log_level_without_a_terminal() -> None:
    """Faust's spinner sets the root logger to DEBUG at ``-l warn``, which makes every
    debug call of aiokafka and Faust build a record; our Worker keeps it off the terminal."""
    import io
    import logging

    from streams.app import create_app
    from streams.settings import Settings

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    app = create_app(Settings.from_env({"RETENTION_STORE": "memory://",
                                        "RETENTION_MODELS": "0"}))
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        for out, expected in ((io.StringIO(), logging.WARNING), (Tty(), logging.DEBUG)):
            root.handlers[:] = [logging.StreamHandler(io.StringIO())]
            root.setLevel(logging.WARNING)
            worker = app.Worker(loglevel="warn", stdout=out)
            worker.on_setup_root_logger(root, logging.WARNING)
            assert root.level == expected, (out, logging.getLevelName(root.level))
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_worker_consumer_fetch_wait_is_short_only_on_the_embedded_broker() -> None:
    """Tansu holds a fetch for its whole wait: Faust's 1,500 ms is cut on the embedded
    broker only (streams.app.short_fetch_wait_on_embedded_broker)."""
    import asyncio

    from streams.app import EMBEDDED_FETCH_WAIT_MS, create_app
    from streams.settings import Settings

    async def fetch_wait(embedded: str) -> int:
        app = create_app(Settings.from_env({"RETENTION_STORE": "memory://",
                                            "RETENTION_MODELS": "0",
                                            "RETENTION_BROKER": "127.0.0.1:1",
                                            "RETENTION_EMBEDDED_BROKER": embedded}))
        consumer = app.consumer._thread._create_worker_consumer(app.consumer.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetch_wait("1")) == EMBEDDED_FETCH_WAIT_MS < 100
    assert asyncio.run(fetch_wait("0")) == 1500
