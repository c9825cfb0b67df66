"""State size per customer, and memory / RocksDB size at 100,000 and 1,000,000 customers.

1. A sample of realistic states: the shopper simulator (``--sample`` customers over
   ``--days``) through the engine with the online models (``models.scoring.ModelHub``), as a
   worker computes them. Per key: the JSON bytes the table stores (``CustomerState.to_dict``,
   orjson) - mean, median, p95, max - and the time to read one back into a ``CustomerState``,
   as a ratio to its JSON decoding alone.
2. For each target size (default 100k and 1M keys): the sample states cloned under new keys
   (a customer's state size does not depend on how many others exist) into
   - an engine's in-memory store (``Engine(store=dict)``) plus its due-time index: resident
     memory added (VmRSS) and bytes per customer;
   - RocksDB through ``rocksdict`` (the library Faust's RocksDB store uses), one database
     per partition like the worker (4): directory size after compaction, write time, and
     two ways for a worker to start a partition's engine, timed in the same run:
     ``read all``, every key read back and decoded into a ``CustomerState``, then the
     due-time index rebuilt from them (what ``streams.agents.Topology.runtime`` did until
     2026-11-23), and ``start``, what it does now: ``streams.state.index_items`` over the
     partition's database (values decoded by Faust's JSON codec, only the due time kept,
     no state loaded: ``Engine.load_index``), with the peak memory each adds.

    python bench/state_size.py --sample 2000 --days 365 --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import EngineConfig  # noqa: E402
from models.contract import parse_event  # noqa: E402
from models.engine import Engine  # noqa: E402
from models.partitioning import partition_for  # noqa: E402
from models.simulator import SimConfig, simulate  # noqa: E402
from models.state import CustomerState  # noqa: E402
from streams.state import index_items  # noqa: E402

PARTITIONS = 4


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sample_states(customers: int, days: float, models: bool) -> list[dict]:
    scorer = None
    if models:
        from models.scoring import HubConfig, ModelHub

        scorer = ModelHub(HubConfig())
    sim = simulate(SimConfig(n_customers=customers, days=days, seed=3, usd_share=0.0))
    eng = Engine(EngineConfig(), scorer=scorer)
    for ev in sim.events:
        eng.process(parse_event(orjson.dumps(ev)))
    return [s.to_dict() for s in eng.store.values()]


def _timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, the garbage collector off (as a worker tunes it away from the
    hot path, streams/gc_tuning.py)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def pct(values: list[int], q: float) -> int:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--days", type=float, default=365)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--no-models", action="store_true")
    p.add_argument("--no-rocksdb", action="store_true")
    args = p.parse_args()

    t0 = time.perf_counter()
    sample = sample_states(args.sample, args.days, not args.no_models)
    blobs = [orjson.dumps(d) for d in sample]
    sizes = [len(b) for b in blobs]
    customers = [d for d in sample if not d["anonymous"]]
    print(f"sample: {len(sample):,} keys ({len(customers):,} customers) from {args.sample:,} "
          f"simulated customers over {args.days:g} days, models={'on' if not args.no_models else 'off'}"
          f" ({time.perf_counter() - t0:.0f}s)")
    print(f"state JSON bytes per key: mean {statistics.mean(sizes):,.0f}, median "
          f"{statistics.median(sizes):,.0f}, p95 {pct(sizes, 0.95):,}, max {max(sizes):,}")
    fields = {}
    for d in sample:
        for k, v in d.items():
            fields[k] = fields.get(k, 0) + len(orjson.dumps(v)) + len(k) + 4
    top = sorted(fields.items(), key=lambda kv: -kv[1])[:6]
    print("largest fields (share of bytes): " + ", ".join(
        f"{k} {v / sum(sizes):.0%}" for k, v in top))
    # what a worker pays to read a state back (TableStore.get on a key not cached), against
    # the JSON decoding alone, timed in the same run (best of 5 passes over the sample)
    loads, from_dict = orjson.loads, CustomerState.from_dict
    decode = min(_timed(lambda: [loads(b) for b in blobs]) for _ in range(5))
    read = min(_timed(lambda: [from_dict(loads(b)) for b in blobs]) for _ in range(5))
    print(f"reading a state back: {read / len(blobs) * 1e6:.1f} us a key "
          f"(orjson.loads + CustomerState.from_dict), {read / decode:.2f}x orjson.loads alone "
          f"({decode / len(blobs) * 1e6:.1f} us)")

    print(f"\n{'keys':>10} {'RSS added':>11} {'B/key':>7} {'index':>8} "
          f"{'RocksDB':>10} {'B/key':>7} {'write s':>8} {'read all s':>11} {'keys/s':>9} "
          f"{'RSS added':>10} {'start s':>8} {'keys/s':>9} {'RSS added':>10} {'ratio':>6}")
    for target in [int(x) for x in args.sizes.split(",") if x]:
        gc.collect()
        before = rss()
        eng = Engine()
        store = eng.store
        n = len(sample)
        for i in range(target):
            d = orjson.loads(blobs[i % n])          # fresh objects for every key
            d["key"] = f"k{i}"
            store[d["key"]] = CustomerState.from_dict(d)
        indexed = eng.rebuild_index()
        gc.collect()
        added = rss() - before
        line = (f"{target:10,} {added / 2**20:9,.0f}MB {added / target:7,.0f} {indexed:8,}")
        del eng, store
        gc.collect()
        if not args.no_rocksdb:
            from rocksdict import Options, Rdict

            root = Path(tempfile.mkdtemp(prefix="bench-rocks-"))
            try:
                dbs = [Rdict(str(root / f"p{p}"), options=Options(raw_mode=True))
                       for p in range(PARTITIONS)]
                t1 = time.perf_counter()
                for i in range(target):
                    key = f"k{i}"
                    dbs[partition_for(key, PARTITIONS)][key.encode()] = blobs[i % n]
                for db in dbs:
                    db.flush()
                    db.compact_range(None, None)
                write_s = time.perf_counter() - t1
                for db in dbs:
                    db.close()
                size = dir_size(root)
                from faust.utils import json as faust_json

                def open_dbs() -> list:
                    return [Rdict(str(root / f"p{p}"), options=Options(raw_mode=True))
                            for p in range(PARTITIONS)]

                # before: read every key back, decode, index (and keep the states)
                gc.collect()
                rss0 = rss()
                t2 = time.perf_counter()
                dbs = open_dbs()
                eng = Engine()
                for db in dbs:
                    for k, v in db.items():
                        eng.store[k.decode()] = CustomerState.from_dict(orjson.loads(v))
                eng.rebuild_index()
                restore_s = time.perf_counter() - t2
                restore_rss = rss() - rss0
                for db in dbs:
                    db.close()
                del eng
                gc.collect()
                # now: the due-time index only, states read when needed
                rss0 = rss()
                t3 = time.perf_counter()
                dbs = open_dbs()
                engines = []
                for db in dbs:
                    eng = Engine()
                    _, timers = index_items(db.items(), faust_json.loads)
                    eng.load_index(timers)
                    engines.append(eng)
                start_s = time.perf_counter() - t3
                start_rss = rss() - rss0
                assert sum(len(e._heap) for e in engines) == indexed
                for db in dbs:
                    db.close()
                del engines, eng
                line += (f" {size / 2**20:8,.0f}MB {size / target:7,.0f} {write_s:8.1f} "
                         f"{restore_s:11.1f} {target / restore_s:9,.0f} "
                         f"{restore_rss / 2**20:8,.0f}MB {start_s:8.1f} {target / start_s:9,.0f} "
                         f"{start_rss / 2**20:8,.0f}MB {restore_s / start_s:6.1f}")
            finally:
                shutil.rmtree(root, ignore_errors=True)
        print(line, flush=True)
        gc.collect()
    print(f"\npid {os.getpid()} peak RSS {rss() / 2**20:,.0f}MB")


if __name__ == "__main__":
    main()
