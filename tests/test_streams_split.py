"""A worker in two processes (``RETENTION_DOMAIN_PROCESS=on``, streams/split.py) on the real
broker: the same facts as the offline replay, its web views fed by the domain process, and
a SIGKILL of the domain process (the worker ends, a restart replays what was not acked).

The whole broker suite also runs with every worker split: ``RETENTION_TEST_DOMAIN_PROCESS=1
.venv/bin/python -m pytest -m broker`` (docs/OPERATIONS.md)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import orjson
import pytest
from tests.conftest import key_of, produce_raw, read_topic, simulated_lines, wait_committed
from tests.test_streams_pipeline import (INPUT, check_against_replay, setup_env, summary,
                                         summary_after)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def get(env: dict[str, str], path: str) -> dict:
    url = f"http://127.0.0.1:{env['RETENTION_WEB_PORT']}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_split_worker_gives_the_replayed_facts_and_its_views(broker, workers, unique,
                                                             tmp_path):
    env, settings = setup_env(broker, unique, tmp_path, RETENTION_MODELS="1",
                              RETENTION_DOMAIN_PROCESS="1")
    w = workers("streams", env, name="split")
    w.wait_ready(60)
    lines = simulated_lines(customers=120, days=90, seed=17)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])
    done_at = time.time()
    n_changes, _ = check_against_replay(broker, settings, lines)
    assert n_changes > 300

    s = summary(env)
    pid = s["domain_process"]["pid"]
    assert pid and pid != w.proc.pid and _alive(pid), s      # the engines ran over there
    assert s["stats"]["processed"] == len(lines) and s["stats"]["errors"] == 0, s
    assert "domain process %d started" % pid in w.log()

    # the views read what the domain process reports
    flow = get(env, "/flow")
    rows = {row["partition"]: row for row in flow["partitions"]}
    assert sum(row.get("events_applied", 0) for row in rows.values()) == len(lines), rows
    assert all(rows[p]["watermark"] for p in s["partitions"]), rows
    segments = get(env, "/segments")
    members = sum(row["members"] for row in segments["segments"])
    exact = get(env, "/segments?exact=1")
    assert members > 0 and members == sum(row["members"] for row in exact["segments"])
    deadline = time.monotonic() + 20          # refreshed at most every 2 s, when read
    while True:
        models = get(env, "/models")
        if models.get("refreshed_at", 0) > done_at or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert models["partitions"] == sorted(s["partitions"]), models
    assert set(models["models"]) >= {"churn_risk", "abandon_risk", "clv", "next_order"}
    ab = models["models"]["abandon_risk"]
    assert ab["labels"] > 0 and 0 < ab["auc"] < 1, ab
    assert set(ab["versions"]) == {str(p) for p in s["partitions"]}
    changes = [orjson.loads(r.value) for r in read_topic(broker.bootstrap,
                                                          settings.topic("segments.changes"))]
    who = changes[-1]["customer_id"]
    doc = get(env, f"/customers/{who}")
    assert doc["customer_id"] == who and doc["segments"] is not None, doc
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{env['RETENTION_WEB_PORT']}/metrics", timeout=10).read().decode()
    assert "retention_watermark_seconds{" in metrics

    assert w.stop() == 0                                     # a clean stop ends both
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_domain_process_sigkill_ends_the_worker_and_a_restart_replays(broker, workers,
                                                                      unique, tmp_path):
    env, settings = setup_env(broker, unique, tmp_path, RETENTION_DOMAIN_PROCESS="1",
                              RETENTION_BATCH_MAX="50")
    lines = simulated_lines(customers=300, days=120, seed=23)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    w1 = workers("streams", env, name="first")
    w1.wait_ready(60)
    s = summary_after(env, len(lines) // 3)
    done = s["stats"]["messages"]
    assert done < len(lines), "worker finished before the kill: raise the event count"
    import os

    os.kill(s["domain_process"]["pid"], signal.SIGKILL)
    assert w1.proc.wait(20) == 70, w1.tail()                 # the worker ends with it
    assert "the domain process ended" in w1.log()
    w2 = workers("streams", env, name="restarted")
    w2.wait_ready(90)
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w2])
    n_records, n_unique = check_against_replay(broker, settings, lines)
    assert summary(env)["stats"]["dead_lettered"] == 0
    print(f"domain process killed after {done}/{len(lines)} messages; {n_records} change "
          f"records, {n_unique} unique")
