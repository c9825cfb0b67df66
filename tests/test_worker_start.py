"""What a worker does before Faust starts: check its configuration (clear message, exit 2)
and decide whether its local table copies can be trusted (only after a clean stop)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.__main__ import CLEAN_STOP_MARKER, trust_local_tables

ROOT = Path(__file__).resolve().parents[1]


def test_local_tables_are_dropped_after_an_unclean_stop(tmp_path):
    tables = tmp_path / "v1" / "tables" / "customers-0.db"
    tables.mkdir(parents=True)
    assert trust_local_tables(tmp_path) is False          # no clean-stop marker: a crash
    assert not (tmp_path / "v1" / "tables").exists()


def test_local_tables_are_kept_after_a_clean_stop(tmp_path):
    tables = tmp_path / "v1" / "tables" / "customers-0.db"
    tables.mkdir(parents=True)
    (tmp_path / CLEAN_STOP_MARKER).touch()
    assert trust_local_tables(tmp_path) is True
    assert tables.exists()
    assert not (tmp_path / CLEAN_STOP_MARKER).exists()    # consumed: the next stop must re-earn it


def test_worker_with_unreachable_broker_says_what_to_do(tmp_path):
    env = {"RETENTION_BROKER": "127.0.0.1:1", "RETENTION_DATA_DIR": str(tmp_path),
           "RETENTION_WEB_PORT": "0", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "streams", "worker"], cwd=ROOT, env=env,
                       capture_output=True, timeout=60, check=False)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "cannot reach the Kafka broker at 127.0.0.1:1" in err and "what to do:" in err
