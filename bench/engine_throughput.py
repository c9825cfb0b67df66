"""Engine alone: events/s and microseconds per event on simulator traffic.

Prints, for the same events in the same run (medians of --repeat runs):
  - decode: ``orjson.loads`` of each line (the floor of any JSON pipeline, the baseline);
  - contract: ``models.contract.parse_event`` (decode + schema validation);
  - engine: ``Engine.process`` on already validated events (state, sessions, segments, timers);
  - engine+models: the same with the online models (``models.scoring.ModelHub``), if present;
  - pipeline: contract + engine, what one partition of a worker does per event.
Each timing is also given as a ratio to the decode baseline, since machines here are
shared and noisy.

    python bench/engine_throughput.py --customers 5000 --days 120
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import EngineConfig  # noqa: E402
from models.contract import parse_event  # noqa: E402
from models.engine import Engine  # noqa: E402
from models.simulator import SimConfig, simulate  # noqa: E402

CONFIG = EngineConfig(currency_rates={"USD": 0.8})


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=5000)
    p.add_argument("--days", type=float, default=120)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-models", action="store_true")
    args = p.parse_args()

    sim = simulate(SimConfig(n_customers=args.customers, days=args.days, seed=args.seed, usd_share=0.05))
    lines = [orjson.dumps(e) for e in sim.events]
    events = [parse_event(raw) for raw in lines]
    n = len(events)
    print(f"{n:,} simulator events, {args.customers:,} customers, {args.days:g} days, "
          f"{sum(map(len, lines)) / n:.0f} bytes/event on average")

    def decode():
        for raw in lines:
            orjson.loads(raw)

    def contract():
        for raw in lines:
            parse_event(raw)

    def engine_only(scorer_factory=None):
        def go():
            batch = copy.deepcopy(events)   # validate() may normalise events in place
            eng = Engine(CONFIG, scorer=scorer_factory() if scorer_factory else None)
            t0 = time.perf_counter()
            for e in batch:
                eng.process(e)
            go.elapsed = time.perf_counter() - t0
            go.changes = sum(eng.counters[k] for k in eng.counters if k == "changes")
        return go

    def pipeline():
        eng = Engine(CONFIG)
        for raw in lines:
            eng.process(parse_event(raw))

    rows = []
    base = timed(decode, args.repeat)
    rows.append(("decode (orjson.loads)", base))
    rows.append(("contract (decode + validate)", timed(contract, args.repeat)))
    runs = []
    go = engine_only()
    for _ in range(args.repeat):
        gc.collect()
        go()
        runs.append(go.elapsed)
    rows.append(("engine (Engine.process)", statistics.median(runs)))
    changes = go.changes
    if not args.no_models:
        try:
            from models.scoring import ModelHub
        except ImportError:
            ModelHub = None
        if ModelHub is not None:
            runs = []
            go = engine_only(ModelHub)
            for _ in range(args.repeat):
                gc.collect()
                go()
                runs.append(go.elapsed)
            rows.append(("engine + models (ModelHub)", statistics.median(runs)))
    rows.append(("pipeline (contract + engine)", timed(pipeline, args.repeat)))

    print(f"\n{'stage':32} {'events/s':>12} {'us/event':>10} {'x decode time':>14}")
    for name, secs in rows:
        print(f"{name:32} {n / secs:12,.0f} {secs / n * 1e6:10.1f} {secs / base:14.1f}")
    print(f"\n{changes:,} segment changes per run ({changes / n:.3f} per event)")


if __name__ == "__main__":
    main()
