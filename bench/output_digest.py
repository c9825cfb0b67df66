"""Digest of everything the domain computes over a stream: a guard for speed work.

Runs the contract, the engine and the online models (one ``ModelHub``, as a worker runs
them) over a simulated event stream (or, with ``--traffic uniform``, the uniform-key stress
stream of ``bench/pipeline_throughput.py``), then prints one SHA-256 over every segment change
(canonical JSON), another over every customer's final state, another over the models'
description (weights, live metrics, population), and the time per event. An optimisation
that claims to change nothing must leave the three digests as they were:

    python bench/output_digest.py --customers 3000 --days 120      # before and after
    python bench/output_digest.py --traffic uniform --events 60000

The digests depend on the Python, numpy and scipy versions only through floating point;
compare runs on one machine and one venv.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import EngineConfig  # noqa: E402
from models.contract import parse_event  # noqa: E402
from models.engine import Engine  # noqa: E402
from models.scoring import ModelHub  # noqa: E402
from models.simulator import SimConfig, simulate  # noqa: E402

_OPTS = orjson.OPT_SORT_KEYS


def digests(lines: list[bytes]) -> tuple[dict[str, str], float, int]:
    """(digests, seconds spent in parse + process, number of changes) for one run."""
    engine = Engine(EngineConfig(currency_rates={"USD": 0.8}), scorer=ModelHub())
    changes = hashlib.sha256()
    n = 0
    gc.collect()
    t0 = time.perf_counter()
    outs = []
    for raw in lines:
        outs.append(engine.process(parse_event(raw)))
    elapsed = time.perf_counter() - t0
    for out in outs:
        for c in out:
            changes.update(orjson.dumps(c, option=_OPTS))
            changes.update(b"\n")
            n += 1
    states = hashlib.sha256()
    for key in sorted(engine.store):
        states.update(orjson.dumps(engine.store[key].to_dict(), option=_OPTS))
    models = hashlib.sha256(orjson.dumps(engine.scorer.describe(), option=_OPTS))
    return ({"changes": changes.hexdigest()[:16], "states": states.hexdigest()[:16],
             "models": models.hexdigest()[:16]}, elapsed, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=None,
                   help="3,000 for simulator traffic, 5,000 for the uniform stream")
    p.add_argument("--days", type=float, default=120)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--traffic", choices=["sim", "uniform"], default="sim")
    p.add_argument("--events", type=int, default=60_000, help="uniform traffic: events")
    args = p.parse_args()
    if args.traffic == "uniform":
        from bench._harness import uniform_events

        events = uniform_events(args.events, args.customers or 5000, seed=args.seed)
    else:
        events = simulate(SimConfig(n_customers=args.customers or 3000, days=args.days,
                                    seed=args.seed, usd_share=0.05)).events
    lines = [orjson.dumps(e) for e in events]
    times = []
    for _ in range(args.repeat):
        d, secs, n = digests(lines)
        times.append(secs)
    print(f"{len(lines):,} events, {n:,} changes")
    for k, v in d.items():
        print(f"{k:8} {v}")
    print(f"us/event (contract + engine + models): "
          f"{' / '.join(f'{t / len(lines) * 1e6:.1f}' for t in times)}")


if __name__ == "__main__":
    main()
