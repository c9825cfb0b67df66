#!/usr/bin/env python
"""Minimal Tansu reproduction, no pause, no concurrency: a 1-partition topic filled with
single-record batches; after every STEP batches, Fetch from offset 0 (and from the middle)
with several max_wait_ms values. Once listing the partition's objects takes longer than
max_wait, Fetch returns no records (error 0, high watermark > fetch offset), every time."""
import os, sys, time, json, argparse
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Broker, create_topic
from probe import fetch

ap = argparse.ArgumentParser()
ap.add_argument("--max", type=int, default=60000)
ap.add_argument("--step", type=int, default=5000)
ap.add_argument("--waits", default="10,25,50,100,500")
ap.add_argument("--repeat", type=int, default=3)
a = ap.parse_args()
waits = [int(w) for w in a.waits.split(",")]
import tempfile
RUNS = os.path.join(tempfile.gettempdir(), "tansu-fetch-runs")
os.makedirs(RUNS, exist_ok=True)
with Broker(os.path.join(RUNS, f"minimal-{os.getpid()}.log")) as b:
    time.sleep(0.3); create_topic(b.bootstrap, "t", 1)
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=0, batch_size=1, acks=1, enable_idempotence=False)
    n = 0
    print("objects  wait_ms: [records from 0 / from middle / ms] x repeat", flush=True)
    while n < a.max:
        for _ in range(a.step):
            p.send("t", value=b'{"pad":"' + b"x" * 380 + b'"}'); n += 1
        p.flush(120); time.sleep(0.5)
        row = {}
        for w in waits:
            row[w] = []
            for _ in range(a.repeat):
                r0 = fetch(b.bootstrap, "t", 0, 0, w)
                rm = fetch(b.bootstrap, "t", 0, n // 2, w)
                row[w].append((r0["records"], rm["records"], r0["ms"]))
            assert r0["err"] == 0 and r0["hw"] == n, r0
        print(f"{n:7d}  " + "  ".join(f"{w}ms:{row[w]}" for w in waits), flush=True)
    p.close()
