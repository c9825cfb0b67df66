"""What a worker split in two processes could reach: the domain behind a pipe, same run.

The worker does everything on one core: Faust's read loop, the contract, the engine and
the models, the state path, the sends. ``docs/BENCHMARKS.md`` (section 1) shows that the
domain alone costs more than the 0.8-of-Faust's-ceiling budget of issue 6 allows for
everything, and that no cheap cut is left in it. The machine has a second core. A worker
whose Faust side (fetch, sends, tables, acks) hands raw records to a child process that owns
the partitions' engines would pipeline the two halves: its throughput is bounded by the
slower half, and the Faust half only pays for moving bytes across a pipe.

This measures, on the same simulator records in the same run:

- ``inproc``: the domain side of a worker in this process: per record
  ``PartitionProcessor.handle`` (contract, engine, online models, output validation) inside
  the ``TableStore`` undo log, the changes serialised as they would be sent, and a flush of
  the changed states every ``--flush-every`` records (a worker flushes every 0.5 s);
- ``split``: the same domain side in a child process, fed batches of raw records through a
  pipe (``multiprocessing.connection``, ``marshal``), answering with the changes and the
  flushed states as bytes, ``--depth`` batches in flight. The parent's CPU time per record is
  what the Faust half would pay on top of its read loop and its sends.

    python bench/split_bound.py --events 40000 --runs 3

It checks that both paths produce the same changes and states (byte for byte). It does not
measure Faust or the broker: the Faust half's own cost is the ``decode_fast`` consumer of
``bench/pipeline_throughput.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import marshal
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._harness import simulator_events  # noqa: E402
from models.config import EngineConfig  # noqa: E402
from models.engine import Engine  # noqa: E402
from models.partitioning import partition_for  # noqa: E402
from models.scoring import ModelHub  # noqa: E402
from streams.processor import Message, PartitionProcessor  # noqa: E402
from streams.state import TableStore  # noqa: E402

TOPIC = "shop.clickstream"
Record = tuple[str, int, int, bytes, bytes, float]


class BytesTable(dict):
    """A RocksDB stand-in: values stored as JSON bytes, every read decodes a fresh copy."""

    data = type("Data", (), {"_dbs": {}})()

    def get(self, key: bytes, default: Any = None) -> Any:
        raw = dict.get(self, key)
        return default if raw is None else orjson.loads(raw)

    def __setitem__(self, key: bytes, value: Any) -> None:
        dict.__setitem__(self, key, orjson.dumps(value))


class DomainSide:
    """The partitions' processors and stores: what the child process would own."""

    def __init__(self, partitions: int) -> None:
        cfg = EngineConfig(currency_rates={"USD": 0.8})
        self.parts = []
        for p in range(partitions):
            table = BytesTable()
            store = TableStore(table, keys=lambda: [])
            engine = Engine(cfg, store=store, scorer=ModelHub())
            processor = PartitionProcessor(p, engine, "bench", 1 << 20, clock=lambda: 0.0)
            self.parts.append((processor, store, table))

    def handle(self, batch: list[Record]) -> list[bytes]:
        out = []
        for topic, partition, offset, key, value, ts in batch:
            processor, store, _table = self.parts[partition]
            store.begin()
            outcome = processor.handle(Message(topic, partition, offset, key, value, (), ts))
            if outcome.dead_letter is not None:
                store.rollback()
                out.append(orjson.dumps(outcome.dead_letter.body))
                continue
            store.commit()
            out.extend(orjson.dumps(c) for c in outcome.outputs)
        return out

    def flush(self) -> list[tuple[bytes, bytes]]:
        written = []
        for processor, store, table in self.parts:
            keys = processor.engine.dirty_keys()
            store.flush(keys)
            processor.engine.clear_dirty()
            written.extend((k.encode(), dict.get(table, k.encode(), b"")) for k in keys)
        return written


def _child(conn: Any, partitions: int) -> None:
    side = DomainSide(partitions)
    busy = 0.0
    while True:
        msg = conn.recv_bytes()
        if msg == b"stop":
            conn.send_bytes(marshal.dumps(busy))
            return
        t0 = time.process_time()
        batch, flush = marshal.loads(msg)
        outs = side.handle(batch)
        written = side.flush() if flush else []
        reply = marshal.dumps((outs, written))
        busy += time.process_time() - t0
        conn.send_bytes(reply)


def records_of(events: list[dict], partitions: int) -> list[Record]:
    """The events as a worker receives them: keyed by customer, on the partition Kafka's
    default partitioner picks, with per-partition offsets, in stream order."""
    offsets = [0] * partitions
    records: list[Record] = []
    for ev in events:
        key = ev.get("customer_id") or ev["anonymous_id"]
        part = partition_for(key, partitions)
        records.append((TOPIC, part, offsets[part], key.encode(), orjson.dumps(ev), 4.0e9))
        offsets[part] += 1
    return records


def _digest(outs: list[bytes], written: list[tuple[bytes, bytes]]) -> str:
    h = hashlib.sha256()
    for o in outs:
        h.update(o)
    for k, v in sorted(written):       # a flush writes a set of keys: order by key
        h.update(k + b"=" + v)
    return h.hexdigest()[:16]


def _batches(records: list[Record], size: int, flush_every: int) -> list[tuple[list, bool]]:
    out = []
    for i in range(0, len(records), size):
        end = i + size
        out.append((records[i:end], end // flush_every != i // flush_every or end >= len(records)))
    return out


def run_inproc(records: list[Record], partitions: int, size: int, flush_every: int) -> dict:
    side = DomainSide(partitions)
    outs: list[bytes] = []
    written: list[tuple[bytes, bytes]] = []
    batches = _batches(records, size, flush_every)
    t0, c0 = time.perf_counter(), time.process_time()
    for batch, flush in batches:
        outs.extend(side.handle(batch))
        if flush:
            written.extend(side.flush())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "parent_cpu": cpu, "child_cpu": 0.0, "digest": _digest(outs, written)}


def run_split(records: list[Record], partitions: int, size: int, flush_every: int,
              depth: int) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, partitions), daemon=True)
    proc.start()
    try:
        parent.send_bytes(marshal.dumps(([], False)))      # wait until the child is up
        parent.recv_bytes()
        outs: list[bytes] = []
        written: list[tuple[bytes, bytes]] = []
        batches = _batches(records, size, flush_every)
        t0, c0 = time.perf_counter(), time.process_time()
        in_flight = 0
        for batch, flush in batches:
            parent.send_bytes(marshal.dumps((batch, flush)))
            in_flight += 1
            if in_flight >= depth:
                o, w = marshal.loads(parent.recv_bytes())
                outs.extend(o)
                written.extend(w)
                in_flight -= 1
        while in_flight:
            o, w = marshal.loads(parent.recv_bytes())
            outs.extend(o)
            written.extend(w)
            in_flight -= 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        parent.send_bytes(b"stop")
        child_cpu = marshal.loads(parent.recv_bytes())
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    return {"wall": wall, "parent_cpu": cpu, "child_cpu": child_cpu,
            "digest": _digest(outs, written)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--customers", type=int, default=5_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch", type=int, default=200, help="records per batch sent to the child")
    p.add_argument("--flush-every", type=int, default=2_000,
                   help="records between state flushes (about 0.5 s of a worker)")
    p.add_argument("--depth", type=int, default=2, help="batches in flight")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()

    records = records_of(simulator_events(args.events, args.customers), args.partitions)
    n = len(records)
    print(f"{n:,} simulator records, {args.customers:,} customers, {args.partitions} partitions, "
          f"batches of {args.batch}, flush every {args.flush_every}, {args.depth} in flight")

    rows: dict[str, list[dict]] = {"inproc": [], "split": []}
    for run in range(args.runs):          # alternate, so drift hits both alike
        for kind in ("inproc", "split") if run % 2 == 0 else ("split", "inproc"):
            r = (run_inproc(records, args.partitions, args.batch, args.flush_every)
                 if kind == "inproc" else
                 run_split(records, args.partitions, args.batch, args.flush_every, args.depth))
            rows[kind].append(r)
            print(f"  run {run}: {kind:7} {n / r['wall']:8,.0f} records/s   parent cpu "
                  f"{r['parent_cpu'] / n * 1e6:6.1f} us/record   child cpu "
                  f"{r['child_cpu'] / n * 1e6:6.1f} us/record   digest {r['digest']}")
    digests = {r["digest"] for rs in rows.values() for r in rs}
    med = {k: statistics.median(n / r["wall"] for r in rs) for k, rs in rows.items()}
    ratio = [i["wall"] / s["wall"] for i, s in zip(rows["inproc"], rows["split"])]
    parent = statistics.median(r["parent_cpu"] / n * 1e6 for r in rows["split"])
    own = statistics.median(r["parent_cpu"] / n * 1e6 for r in rows["inproc"])
    print(f"\n{'':28}{'median':>10}   runs")
    print(f"{'inproc records/s':28}{med['inproc']:10,.0f}   "
          + " / ".join(f"{n / r['wall']:,.0f}" for r in rows["inproc"]))
    print(f"{'split records/s':28}{med['split']:10,.0f}   "
          + " / ".join(f"{n / r['wall']:,.0f}" for r in rows["split"]))
    print(f"{'split / inproc (same run)':28}{statistics.median(ratio):10.2f}   "
          + " / ".join(f"{x:.2f}" for x in ratio))
    print(f"{'domain cpu, us/record':28}{own:10.1f}")
    print(f"{'parent cpu when split':28}{parent:10.1f}   us/record: what the Faust half pays for "
          f"the pipe ({parent / own:.2f} of the domain's cost)")
    print(f"same changes and states in every run: {'yes' if len(digests) == 1 else 'NO: ' + str(digests)}")
    if len(digests) != 1:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
