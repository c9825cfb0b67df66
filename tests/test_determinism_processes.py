"""The same events give the same bytes in any process: another hash seed, or the domain
behind a pipe in a child process (the bound of a two-process worker, bench/split_bound.py).

A replay after a crash, a second worker taking over a partition, or a domain process of its
own all run the engine in another interpreter than the first run: nothing it emits or keeps
may depend on set or dict order that Python's per-process string hashing decides."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _digests(seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "output_digest.py"),
                          "--customers", "250", "--days", "45"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.split()[:1] in (["changes"], ["states"],
                                                                         ["models"])]
    assert len(lines) == 3, out.stdout
    return "\n".join(lines) + "\n" + out.stdout.splitlines()[0]


def test_outputs_states_and_models_do_not_depend_on_the_hash_seed() -> None:
    first, second = _digests("1"), _digests("2")
    assert first == second
    m = re.match(r"([\d,]+) events, ([\d,]+) changes", first.splitlines()[-1])
    assert m, first
    assert int(m.group(2).replace(",", "")) > 500      # the digests cover real work


@pytest.mark.timeout(240)
def test_domain_behind_a_pipe_gives_the_same_changes_and_states() -> None:
    from bench import split_bound as sb
    from bench._harness import simulator_events

    records = sb.records_of(simulator_events(1_500, 300), 4)
    inproc = sb.run_inproc(records, 4, 100, 400)
    split = sb.run_split(records, 4, 100, 400, depth=3)
    assert split["digest"] == inproc["digest"]
    assert split["child_cpu"] > 5 * split["parent_cpu"]      # the work ran in the child
