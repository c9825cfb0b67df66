"""Model snapshots in the streaming worker: signed, kept in a compacted table, restored on a
restart, and refused (never unpickled) when the bytes on the topic were tampered with."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from tests.conftest import (produce_raw, read_topic, key_of, simulated_lines, wait_committed,
                            worker_env)

from models.partitioning import partition_for
from models.scoring import ModelHub
from models.scoring.hub import SnapshotError
from streams.cli import create_all_topics
from streams.settings import Settings

pytestmark = pytest.mark.broker
INPUT = "shop.clickstream"


def latest(records) -> dict[bytes, dict]:
    out: dict[bytes, dict] = {}
    for r in records:
        if r.value is not None:
            out[r.key] = orjson.loads(r.value)
    return out


def test_models_are_snapshotted_signed_restored_and_tamper_refused(broker, workers, unique, tmp_path):
    data = tmp_path / "w"
    env = worker_env(broker.bootstrap, f"rs-{unique}", data, RETENTION_TOPIC_PREFIX=f"t{unique}.",
                     RETENTION_CLOCK_INTERVAL="0", RETENTION_MODELS="1",
                     RETENTION_MODEL_SNAPSHOT_INTERVAL="0.5")
    settings = Settings.from_env(env)
    create_all_topics(settings)
    w = workers("streams", env, name="first")
    w.wait_ready(60)
    lines = simulated_lines(customers=60, days=60, seed=4)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(x), x) for x in lines])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 120, [w])
    changelog = f"{settings.app_id}-models-changelog"
    deadline = time.monotonic() + 30
    snaps: dict[bytes, dict] = {}
    while time.monotonic() < deadline and not snaps:
        snaps = latest(read_topic(broker.bootstrap, changelog))
        time.sleep(0.5)
    assert snaps, "no model snapshot reached the models changelog"
    key = (data / "model.key").read_bytes().strip()
    assert len(key) == 64 and oct((data / "model.key").stat().st_mode)[-3:] == "600"
    blob = base64.b64decode(next(iter(snaps.values()))["blob_b64"])
    hub = ModelHub.restore(blob, key)                       # the signature checks
    assert hub.versions
    tampered = bytearray(blob)
    tampered[-10] ^= 0xFF
    with pytest.raises(SnapshotError):
        ModelHub.restore(bytes(tampered), key)
    with pytest.raises(SnapshotError):
        ModelHub.restore(blob, b"not the key")
    w.stop()

    # a restart on the same data dir restores the models
    w2 = workers("streams", env, name="second")
    w2.wait_ready(60)
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(lines[-1]), lines[-1])])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 60, [w2])
    assert "models restored" in w2.tail(200_000)
    w2.stop()

    # a worker that recovers from the topic (fresh data dir) finds a tampered snapshot: refused
    probe = lines[-1]
    p = partition_for(key_of(probe).decode(), settings.partitions)
    part = str(p).encode()
    bad = dict(snaps[part], blob_b64=base64.b64encode(bytes(tampered)).decode())
    produce_raw(broker.bootstrap, changelog, [(part, orjson.dumps(bad))], partition=p)
    env3 = dict(env, RETENTION_DATA_DIR=str(tmp_path / "fresh"), RETENTION_MODEL_KEY=key.decode())
    w3 = workers("streams", env3, name="third")
    w3.wait_ready(60)
    fresh = orjson.loads(probe)
    fresh["event_id"] += "-again"
    produce_raw(broker.bootstrap, settings.topic(INPUT), [(key_of(probe), orjson.dumps(fresh))])
    wait_committed(broker.bootstrap, settings.app_id, settings.topic(INPUT), 60, [w3])
    log = w3.tail(200_000)
    assert "model snapshot refused" in log
    assert "hunter" not in log and key.decode() not in log     # the key is never logged
