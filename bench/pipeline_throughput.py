"""Pipeline throughput per worker against this machine's and Faust's ceilings, same topic,
same run.

For each run: a fresh embedded broker; N events produced once to ``shop.clickstream``
(4 partitions); then, one after the other, each consumer reads the same topic from the
beginning under its own consumer group, in its own process:

  raw        aiokafka getmany + orjson.loads (the limit of this machine)
  decode     a Faust agent that only decodes (Faust's own ceiling, same Faust settings,
             faust-streaming 0.15.3's own read loop)
  decode_fast  the same agent on the worker's read loop (``streams/faust_speedups.py``:
             no tasks per record), the ceiling of the Faust runtime the worker runs on
  pipeline   the real worker: contract, engine with the online models (full scoring),
             segment changes delivered, RocksDB table with changelog (the production
             batched agent: state written once per key per batch)
  pipeline2  the same with two workers in one group (``--workers 2``)
  pipeline_stock  the worker on faust-streaming's own read loop (``RETENTION_FAUST_FAST_DRAIN=0``)
  pipeline_gcoff  the worker with Python's own garbage collector (``RETENTION_GC_THRESHOLDS=off``,
             see ``streams/gc_tuning.py``)
  quix       Quix Streams 3.28: decode + contract + per-key state update, RocksDB + changelog

Each consumer times itself from its first to its last event (start-up, group join and
recovery excluded). The ratios are computed within a run, then the medians over runs are
printed: the machine is shared, absolute figures move, ratios much less.

    python bench/pipeline_throughput.py --events 50000 --traffic sim --runs 3
    python bench/pipeline_throughput.py --events 50000 --traffic uniform --kinds raw,decode,pipeline
    python bench/pipeline_throughput.py --events 50000 --workers 2 --kinds decode,pipeline,pipeline2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _harness as H  # noqa: E402

ALL_KINDS = ("raw", "decode", "decode_fast", "pipeline", "pipeline_split", "pipeline_stock",
             "pipeline_gcoff", "pipeline2", "quix")
#: the batched prototype is now the production agent: old names still accepted
ALIASES = {"batched": "pipeline", "batched2": "pipeline2"}


def one_run(args: argparse.Namespace, run: int, kinds: list[str], work: Path) -> dict[str, dict]:
    events = (H.simulator_events(args.events, args.customers, seed=run + 1)
              if args.traffic == "sim" else H.uniform_events(args.events, args.customers,
                                                              seed=run + 1))
    out: dict[str, dict] = {}
    with H.fresh_broker(work) as broker:
        base = H.settings_for(broker.bootstrap, f"bench-data-{run}", work / "data")
        H.create_topics(base)
        recs = H.records(events, base.topic_prefix, routed=args.routed)
        rate = H.produce(broker.bootstrap, recs)
        out["_produce"] = {"rate": rate, "n": len(recs)}
        print(f"  run {run}: produced {len(recs):,} events in {len(recs) / rate:.1f}s "
              f"({rate:,.0f}/s)", flush=True)
        order = kinds if run % 2 == 0 else list(reversed(kinds))   # alternate the order
        for kind in order:
            n_workers = 2 if kind == "pipeline2" else 1
            app_kind = ("pipeline" if kind.startswith("pipeline") else
                        "decode" if kind.startswith("decode") else kind)
            # Faust's own read loop for the ceiling as Faust ships it, the patched one else
            fast = "0" if kind == "decode" or kind.endswith("_stock") else "1"
            app_id = f"bench-{kind}-{run}"
            consumers = []
            for w in range(n_workers):
                data = work / f"{kind}-{run}-{w}"
                s = H.settings_for(broker.bootstrap, app_id, data, store=args.store)
                if w == 0:
                    H.create_topics(s)
                env = H.env_of(s,
                               # the partitions' model hubs (streams.settings.Settings.models)
                               RETENTION_MODELS="0" if args.no_scoring else "1",
                               RETENTION_FAUST_FAST_DRAIN=fast,
                               # Python's own collector (streams/gc_tuning.py off)
                               RETENTION_GC_THRESHOLDS="off" if kind.endswith("_gcoff") else "",
                               # the engines in a child process (streams/split.py)
                               RETENTION_DOMAIN_PROCESS="1" if kind == "pipeline_split" else "")
                consumers.append(H.Consumer(app_kind, env, args.events, work,
                                            name=f"{kind}-{run}-{w}",
                                            faust=app_kind in ("decode", "pipeline")))
            t0 = time.monotonic()
            try:
                res = H.run_consumers(consumers, args.events, timeout=args.events / 300 + 180)
            except RuntimeError as exc:
                print(f"  run {run}: {kind} FAILED: {str(exc)[:2000]}", flush=True)
                continue
            res["wall"] = time.monotonic() - t0
            out[kind] = res
            extra = ""
            if kind.startswith("pipeline"):
                stats = [p.get("stats", {}) for p in res["parts"]]
                writes = sum(p.get("table_writes", 0) for p in res["parts"])
                batches = sum(s.get("batches", 0) for s in stats)
                extra = (f"  changes={sum(s.get('changes_engine', 0) for s in stats):,} "
                         f"dead={sum(s.get('dead_lettered', 0) for s in stats)} "
                         f"table_writes={writes:,} batches={batches:,} "
                         f"flushes={sum(s.get('flushes', 0) for s in stats):,} "
                         f"ticks={sum(s.get('ticks', 0) for s in stats):,} "
                         f"skipped={sum(s.get('skipped', 0) for s in stats):,}")
            print(f"  run {run}: {kind:10} {res['rate']:10,.0f} events/s "
                  f"({res['n']:,} in {res['last'] - res['first']:.1f}s){extra}", flush=True)
            for c in consumers:
                shutil.rmtree(work / c.name.replace(f"{kind}-{run}-", f"{kind}-{run}-"),
                              ignore_errors=True)
    return out


RATIOS = [("pipeline", "decode"), ("pipeline", "decode_fast"), ("pipeline", "raw"),
          ("decode", "raw"), ("decode_fast", "decode"), ("pipeline", "pipeline_stock"), ("pipeline", "pipeline_gcoff"),
          ("pipeline_stock", "decode"), ("quix", "decode"), ("pipeline", "quix"),
          ("pipeline2", "pipeline"), ("pipeline2", "decode"),
          ("pipeline_split", "decode"), ("pipeline_split", "pipeline"),
          ("pipeline_split", "quix"), ("pipeline_split", "pipeline2")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--traffic", choices=["sim", "uniform"], default="sim")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--kinds", default="raw,decode,pipeline,quix")
    p.add_argument("--workers", type=int, default=1, help="2: also run pipeline2")
    p.add_argument("--store", default="rocksdb://")
    p.add_argument("--routed", action="store_true", help="route events to the 3 input topics")
    p.add_argument("--no-scoring", action="store_true", help="engine without the online models")
    p.add_argument("--json", help="write all figures here")
    p.add_argument("--keep", action="store_true", help="keep the work dir (consumer logs)")
    args = p.parse_args()
    kinds = list(dict.fromkeys(ALIASES.get(k, k) for k in args.kinds.split(",") if k))
    if args.workers >= 2 and "pipeline2" not in kinds:
        kinds.append("pipeline2")
    if "quix" in kinds:
        try:
            import quixstreams  # noqa: F401
        except ImportError:
            print("quixstreams not installed (pip install quixstreams==3.28.1): skipping quix")
            kinds.remove("quix")
    work = H.tmpdir("bench-tp-")
    print(f"{args.events:,} {args.traffic} events, {args.customers:,} customers, "
          f"{H.PARTITIONS} partitions, store {args.store}, kinds {kinds}, work dir {work}")
    runs = []
    for run in range(args.runs):
        runs.append(one_run(args, run, kinds, work))
    print(f"\n{'consumer':12} {'median events/s':>16} {'runs':>30}")
    for kind in kinds:
        rates = [r[kind]["rate"] for r in runs if kind in r]
        print(f"{kind:12} {H.median(rates):16,.0f} {', '.join(f'{x:,.0f}' for x in rates):>30}")
    print(f"\n{'ratio (same run)':28} {'median':>8} {'runs':>30}")
    for a, b in RATIOS:
        vals = [r[a]["rate"] / r[b]["rate"] for r in runs if a in r and b in r]
        if vals:
            print(f"{a + ' / ' + b:28} {H.median(vals):8.2f} "
                  f"{', '.join(f'{x:.2f}' for x in vals):>30}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    if args.keep:
        print(f"work dir kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
