#!/usr/bin/env python
"""Broker-only reproduction of the 'input topic returns nothing after a SIGSTOP pause' wedge
(Tansu 0.6.0, memory storage).

Mirrors tests/test_faults.py::Load (kafka-python producer, linger 0, batch_size 1, acks 1,
retries 20, request timeout 30 s, ~400-byte JSON, keyed by customer) at --rate events/s for
--seconds, SIGSTOPs the broker for --pause s in the middle, optionally runs --tail-readers
aiokafka consumers that follow the topic's tail (what the Faust workers do), then checks with
fresh clients whether every partition can be read (raw Fetch with max_wait 500 ms and 5 s,
an aiokafka consumer from offset 0 with 16 KB / 64 MB fetch sizes) and what ListOffsets says.

Prints one JSON summary line at the end ("wedged": true/false). Every process it starts is
stopped at exit. Example:
    python repro.py --rate 2000 --seconds 120 --pause 10 --tail-readers 2
"""
from __future__ import annotations
import argparse, json, os, random, signal, subprocess, sys, tempfile, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Broker, create_topic, list_offsets
from probe import fetch, consume_from

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def make_lines(n: int, seed: int) -> list[bytes]:
    """~400-byte JSON events keyed by customer (like the simulator's), as bytes."""
    import orjson
    rnd = random.Random(seed)
    customers = max(50, n // 40)
    types = ["page_view", "add_to_cart", "purchase", "search", "login", "support_ticket"]
    out = []
    for i in range(n):
        c = rnd.randrange(customers)
        ev = {"event_id": f"ev-{seed}-{i:08d}", "type": rnd.choice(types),
              "occurred_at": f"2025-01-{1 + i % 28:02d}T{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:00Z",
              "customer_id": f"cust-{c:06d}" if rnd.random() > 0.1 else None,
              "anonymous_id": f"anon-{c:06d}", "session_id": f"s-{c}-{i // 50}",
              "properties": {"url": f"/product/{rnd.randrange(10000)}", "amount": round(rnd.random() * 200, 2),
                             "currency": "EUR", "ua": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101",
                             "referrer": "https://example.com/" + "r" * rnd.randrange(20, 60)}}
        out.append(orjson.dumps(ev))
    return out


class Load(threading.Thread):
    """tests/test_faults.py::Load, with the producer settings as parameters."""

    def __init__(self, bootstrap, topic, lines, rate, cfg):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.lines, self.rate, self.cfg = bootstrap, topic, lines, rate, cfg
        self.sent, self.error, self.progress, self.errors = [], None, 0, 0

    def run(self):
        import orjson
        try:
            if self.cfg["producer"] == "aiokafka":
                return self._run_aiokafka()
            from kafka import KafkaProducer
            kw = dict(bootstrap_servers=self.bootstrap, linger_ms=self.cfg["linger_ms"],
                      batch_size=self.cfg["batch_size"], acks=self.cfg["acks"], retries=self.cfg["retries"],
                      request_timeout_ms=self.cfg["request_timeout_ms"], max_block_ms=120_000,
                      delivery_timeout_ms=self.cfg["delivery_timeout_ms"])
            if self.cfg["max_in_flight"] is not None:
                kw["max_in_flight_requests_per_connection"] = self.cfg["max_in_flight"]
            if self.cfg["idempotence"] is not None:
                kw["enable_idempotence"] = self.cfg["idempotence"]
            producer = KafkaProducer(**kw)
            futures = []
            t0 = time.monotonic()
            for i, line in enumerate(self.lines):
                key = (orjson.loads(line).get("customer_id") or orjson.loads(line).get("anonymous_id")).encode()
                futures.append((producer.send(self.topic, key=key, value=line), line))
                self.progress = i + 1
                ahead = (i + 1) / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush(timeout=180)
            for fut, line in futures:
                try:
                    md = fut.get(timeout=60)
                    self.sent.append((md.partition, md.offset, line))
                except Exception:  # noqa: BLE001
                    self.errors += 1
            producer.close()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def _run_aiokafka(self):
        import asyncio, orjson
        from aiokafka import AIOKafkaProducer

        async def go():
            kw = dict(bootstrap_servers=self.bootstrap, linger_ms=self.cfg["linger_ms"],
                      max_batch_size=max(self.cfg["batch_size"], 1), acks=self.cfg["acks"],
                      request_timeout_ms=self.cfg["request_timeout_ms"])
            if self.cfg["idempotence"]:
                kw["enable_idempotence"] = True
            p = AIOKafkaProducer(**kw)
            await p.start()
            futs = []
            t0 = time.monotonic()
            for i, line in enumerate(self.lines):
                key = (orjson.loads(line).get("customer_id") or orjson.loads(line).get("anonymous_id")).encode()
                futs.append(await p.send(self.topic, key=key, value=line))
                self.progress = i + 1
                ahead = (i + 1) / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            for f in futs:
                try:
                    md = await f
                    self.sent.append((md.partition, md.offset, b""))
                except Exception:  # noqa: BLE001
                    self.errors += 1
            await p.stop()
        asyncio.run(go())


class Other(threading.Thread):
    """A second producer on another topic (the workers' changelog / change topics)."""

    def __init__(self, bootstrap, topic, rate, seconds):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate, self.seconds, self.n, self.error = bootstrap, topic, rate, seconds, 0, None

    def run(self):
        from kafka import KafkaProducer
        try:
            p = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0, batch_size=1, acks=1, retries=20,
                              max_block_ms=120_000)
            t0 = time.monotonic()
            while time.monotonic() - t0 < self.seconds:
                p.send(self.topic, key=f"k{self.n % 500}".encode(), value=b'{"v":' + str(self.n).encode() + b"}")
                self.n += 1
                ahead = self.n / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            p.flush(120); p.close()
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


class Monitor(threading.Thread):
    """Every few seconds: a raw Fetch of partition 0 from offset 0 (max_wait 500 ms)."""

    def __init__(self, bootstrap, topic, every):
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.every = bootstrap, topic, every
        self.samples, self.stop = [], threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop.wait(self.every):
            try:
                r = fetch(self.bootstrap, self.topic, 0, 0, 500)
                r25 = fetch(self.bootstrap, self.topic, 0, 0, 25)
                # (t, hw, batches@500ms, ms, batches@25ms, ms)
                self.samples.append((round(time.monotonic() - self.t0, 1), r["hw"], r["batches"], r["ms"],
                                     r25["batches"], r25["ms"]))
            except Exception as exc:  # noqa: BLE001
                self.samples.append((round(time.monotonic() - self.t0, 1), repr(exc)[:80]))


def start_tail_readers(n, bootstrap, topic, logdir, max_wait, from_offset=-1):
    procs = []
    for i in range(n):
        f = open(os.path.join(logdir, f"tail{i}.jsonl"), "w")
        procs.append((subprocess.Popen([PY, os.path.join(HERE, "tail_reader.py"), bootstrap, topic,
                                        "--max-wait", str(max_wait), "--from-offset", str(from_offset)],
                                       stdout=f, stderr=subprocess.STDOUT, start_new_session=True), f))
    return procs


def stop_procs(procs):
    for p, f in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p, f in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait(5)
        f.close()


def tail_rates(logdir, n):
    """Records/s each tail reader got, as (seconds-with-data, seconds-without) after the pause."""
    out = []
    for i in range(n):
        rows = [json.loads(l) for l in open(os.path.join(logdir, f"tail{i}.jsonl")) if l.startswith("{")]
        out.append([r["got"] for r in rows])
    return out


def check(bootstrap, topic, partitions, waits=(25, 100, 500, 5000)):
    """ListOffsets, then raw Fetch per partition at offsets 0 / middle / last with several
    max_wait values, then a fresh aiokafka consumer from offset 0 (16 KB and 64 MB partition
    fetch sizes, fetch_max_wait_ms 500 = aiokafka's default, and 25 = the project's worker)."""
    res = {"list_offsets": {}, "fetch": [], "consumer": []}
    lo = list_offsets(bootstrap, topic)
    res["list_offsets"] = {p: list(v) for p, v in lo.items()}
    for p in range(partitions):
        hw = lo[p][1]
        for off in sorted({0, hw // 2, max(hw - 1, 0)}):
            for mw in waits:
                r = fetch(bootstrap, topic, p, off, mw)
                res["fetch"].append({k: r[k] for k in ("p", "off", "wait", "err", "hw", "batches", "first", "ms")})
    for p in range(partitions):
        for mb, mw in ((16 * 1024, 500), (64 * 1024 * 1024, 500), (1024 * 1024, 25)):
            got, dt = consume_from(bootstrap, topic, p, 0, mb, seconds=5.0, fetch_max_wait_ms=mw)
            res["consumer"].append({"p": p, "max_partition_fetch_bytes": mb, "fetch_max_wait_ms": mw,
                                    "got": got, "s": dt})
    res["empty_from_0"] = {mw: sorted({f["p"] for f in res["fetch"]
                                      if f["wait"] == mw and f["off"] == 0 and f["batches"] == 0})
                           for mw in waits}
    res["consumer_empty"] = [(c["p"], c["max_partition_fetch_bytes"], c["fetch_max_wait_ms"])
                             for c in res["consumer"] if c["got"] == 0]
    res["wedged_partitions_500ms"] = res["empty_from_0"][500]
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--pause", type=float, default=10)
    ap.add_argument("--pause-at", type=float, default=0.5, help="fraction of the load")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--tail-readers", type=int, default=0)
    ap.add_argument("--tail-max-wait", type=int, default=25, help="25 = the project worker's fetch wait")
    ap.add_argument("--other-rate", type=float, default=0, help="events/s on a second topic")
    ap.add_argument("--producer", choices=["kafka-python", "aiokafka"], default="kafka-python")
    ap.add_argument("--linger-ms", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--acks", type=int, default=1)
    ap.add_argument("--retries", type=int, default=20)
    ap.add_argument("--request-timeout-ms", type=int, default=30_000)
    ap.add_argument("--delivery-timeout-ms", type=int, default=180_000)
    ap.add_argument("--max-in-flight", type=int, default=None)
    ap.add_argument("--idempotence", choices=["default", "on", "off"], default="default")
    ap.add_argument("--recovery-wait", type=float, default=20, help="if wedged: wait, re-check without readers")
    ap.add_argument("--monitor-every", type=float, default=5)
    ap.add_argument("--logdir", default=None)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    logdir = a.logdir or os.path.join(tempfile.gettempdir(), "tansu-fetch-runs",
                                      time.strftime("%H%M%S") + f"-{os.getpid()}")
    os.makedirs(logdir, exist_ok=True)
    cfg = dict(producer=a.producer, linger_ms=a.linger_ms, batch_size=a.batch_size, acks=a.acks,
               retries=a.retries, request_timeout_ms=a.request_timeout_ms,
               delivery_timeout_ms=a.delivery_timeout_ms, max_in_flight=a.max_in_flight,
               idempotence={"default": None, "on": True, "off": False}[a.idempotence])
    topic, other = "shop.clickstream", "other.changes"
    lines = make_lines(int(a.rate * a.seconds), a.seed)
    summary = {"args": vars(a), "logdir": logdir}
    readers = []
    broker = Broker(os.path.join(logdir, "broker.log"))
    t_start = time.monotonic()
    try:
        broker.start()
        time.sleep(0.3)
        create_topic(broker.bootstrap, topic, a.partitions)
        if a.other_rate:
            create_topic(broker.bootstrap, other, a.partitions)
        readers = start_tail_readers(a.tail_readers, broker.bootstrap, topic, logdir, a.tail_max_wait)
        time.sleep(2 if readers else 0)
        load = Load(broker.bootstrap, topic, lines, a.rate, cfg)
        oth = Other(broker.bootstrap, other, a.other_rate, a.seconds) if a.other_rate else None
        mon = Monitor(broker.bootstrap, topic, a.monitor_every)
        t0 = time.monotonic()
        load.start(); mon.start()
        if oth: oth.start()
        log = []
        if a.pause > 0:
            while time.monotonic() - t0 < a.pause_at * a.seconds:
                time.sleep(0.05)
                if load.error: break
            broker.pause()
            log.append(f"{time.monotonic() - t0:.1f}s SIGSTOP at load {load.progress}")
            time.sleep(a.pause)
            broker.resume()
            log.append(f"{time.monotonic() - t0:.1f}s SIGCONT at load {load.progress}")
        load.join(a.seconds * 3 + 240)
        log.append(f"{time.monotonic() - t0:.1f}s load done alive={load.is_alive()} error={load.error!r} "
                   f"acked={len(load.sent)} failed={load.errors}")
        summary["load_log"] = log
        summary["rss_mb_after_load"] = broker.rss_mb()
        # the check, with the tail readers still running (the test's workers keep running)
        summary["check"] = check(broker.bootstrap, topic, a.partitions)
        e = summary["check"]["empty_from_0"]
        summary["wedged"] = len(e[500]) == a.partitions          # what a default consumer sees
        summary["wedged_25ms"] = len(e[25]) == a.partitions      # what the project's worker sees
        summary["partial_wedge"] = bool(e[500]) and not summary["wedged"]
        if a.other_rate:
            oth.join(60)
            summary["other_topic"] = {"sent": oth.n, "error": repr(oth.error),
                                      "fetch_p0": fetch(broker.bootstrap, other, 0, 0, 500)}
        mon.stop.set(); mon.join(10)
        summary["monitor"] = mon.samples
        if readers:
            summary["tail_got_per_s"] = tail_rates(logdir, a.tail_readers)
        if (summary["check"]["empty_from_0"][500] or summary["check"]["empty_from_0"][25]) and a.recovery_wait > 0:
            # does it recover by itself with the readers still running?
            time.sleep(a.recovery_wait)
            short = lambda r: {k: r[k] for k in ("p", "wait", "batches", "ms", "hw")}
            summary["recheck_readers_running"] = [short(fetch(broker.bootstrap, topic, p, 0, w))
                                                  for p in range(a.partitions) for w in (25, 500)]
            stop_procs(readers); readers = []
            time.sleep(3)
            summary["recheck_readers_stopped"] = [short(fetch(broker.bootstrap, topic, p, 0, w))
                                                  for p in range(a.partitions) for w in (25, 500)]
        summary["broker_alive"] = broker.proc.poll() is None
    finally:
        stop_procs(readers)
        broker.stop()
        summary["elapsed_s"] = round(time.monotonic() - t_start, 1)
        try:
            summary["broker_log_tail"] = open(os.path.join(logdir, "broker.log"), errors="replace").read()[-1500:]
        except OSError:
            pass
        with open(os.path.join(logdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=str)
        print(json.dumps({k: summary.get(k) for k in ("wedged", "wedged_25ms", "partial_wedge", "load_log", "logdir",
                                                       "elapsed_s")} | {"empty_from_0": summary.get("check", {}).get("empty_from_0"),
                                                       "consumer_empty": summary.get("check", {}).get("consumer_empty"),
                                                       "tail_total": [sum(x) for x in summary.get("tail_got_per_s", [])]},
                         default=str), flush=True)


if __name__ == "__main__":
    main()
