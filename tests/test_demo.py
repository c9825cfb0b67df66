"""The README's first command, short: ``python -m streams demo`` starts its own broker and
worker, feeds the simulator through the CLI producer (batched), and stops cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


def test_demo_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "streams", "demo", "--duration", "15",
                          "--quiet", "--rate", "400"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=150,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "stopped: worker exit code 0, broker stopped" in text, text[-4000:]
    # "ready" once the group gave the worker its partitions, not when its web server answers
    assert "consuming partitions [0, 1, 2, 3]" in text, text[:2000]
    summaries = re.findall(r"dead letters (\d+)\s+changes (\d+)", text)
    assert summaries, text[-4000:]
    dead, changes = map(int, summaries[-1])
    assert changes > 100                 # events went through the worker into segments
    assert dead >= 3                     # the demo's deliberate bad messages were dead-lettered
    sent = [int(x) for x in re.findall(r"sent\s+(\d+)/s", text)]
    done = [int(x) for x in re.findall(r"processed\s+(\d+)/s", text)]
    assert sum(done) > 0.8 * sum(sent) > 0, text[-4000:]   # the worker kept up with the producer
