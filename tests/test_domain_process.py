"""The domain half of a split worker (streams/domain_process.py), without Faust or a broker:
its view of the table (a RocksDB secondary instance plus the states it flushed), and its
engines against the one-process path on the same records, in this process and behind the
real frame protocol in a child process."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as settings_hyp
from hypothesis import strategies as st
from tests.conftest import simulated_lines

from models.partitioning import partition_for
from streams.domain_process import (DomainSide, ReplicaTable, read_frame, widen_pipe,
                                    write_frame)
from streams.processor import Message, admit, open_processor
from streams.settings import Settings
from streams.state import META_PREFIX, TableStore

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 2
TOPIC = "shop.clickstream"


def _primary(path: Path):
    """A partition database as Faust's RocksDB store opens it (rocksdict, raw mode)."""
    from rocksdict import Options, Rdict

    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return Rdict(str(path), options=options)


def test_replica_reads_the_primary_and_keeps_its_own_writes_until_written(tmp_path):
    primary = _primary(tmp_path / "p0.db")
    primary.put(b"c1", orjson.dumps({"v": 1}))
    primary.put(META_PREFIX + b"0", orjson.dumps({"clock": {}}))
    primary.flush()
    replica = ReplicaTable(str(tmp_path / "p0.db"), 0, keep_max=0)
    try:
        assert replica.get(b"c1") == {"v": 1}
        assert replica.meta() == {"clock": {}}
        assert replica.get(b"nobody") is None and b"nobody" not in replica
        assert replica.keys() == ["c1"]                  # the meta is not a customer

        replica[b"c1"] = {"v": 2}                        # a flush of the child
        replica[b"c2"] = {"v": 9}
        writes = replica.take(7)
        assert writes == [(b"c1", b'{"v":2}'), (b"c2", b'{"v":9}')]
        # not written by the parent yet: the replica answers with what it flushed
        assert replica.get(b"c1") == {"v": 2} and replica.get(b"c2") == {"v": 9}
        assert sorted(replica.keys()) == ["c1", "c2"]

        replica[b"c2"] = {"v": 10}                       # flushed again, in flush 8
        del replica[b"c1"]
        assert replica.take(8) == [(b"c2", b'{"v":10}'), (b"c1", None)]
        for key, raw in writes:                          # the parent writes flush 7
            primary.put(key, raw)
        replica.written(7)
        # flush 8 is still kept over the primary, which has flush 7 only
        assert replica.get(b"c2") == {"v": 10} and replica.get(b"c1") is None
        assert b"c1" not in replica
        primary.put(b"c2", b'{"v":10}')
        primary.delete(b"c1")
        replica.written(8)
        assert replica._kept == {}                       # everything read from RocksDB now
        assert replica.get(b"c2") == {"v": 10} and replica.get(b"c1") is None
    finally:
        replica.close()
        primary.close()


def test_replica_catches_up_only_past_its_bound(tmp_path):
    primary = _primary(tmp_path / "p0.db")
    replica = ReplicaTable(str(tmp_path / "p0.db"), 0, keep_max=3)
    try:
        for seq in range(3):
            replica[f"c{seq}".encode()] = {"v": seq}
            for key, raw in replica.take(seq):
                primary.put(key, raw)
            replica.written(seq)
            assert len(replica._kept) == seq + 1         # kept, no catch-up yet
        assert [replica.get(f"c{i}".encode()) for i in range(3)] == [{"v": i} for i in range(3)]
        replica[b"c3"] = {"v": 3}
        writes = replica.take(3)
        replica.written(2)                               # 4 kept > 3: catch up to flush 2
        assert list(replica._kept) == [b"c3"]            # flush 3 not written yet
        for key, raw in writes:
            primary.put(key, raw)
        assert [replica.get(f"c{i}".encode()) for i in range(4)] == [{"v": i} for i in range(4)]
    finally:
        replica.close()
        primary.close()


def _records(n_customers: int = 60, days: int = 40) -> list[tuple[int, Message]]:
    out = []
    offsets = [0] * PARTITIONS
    for line in simulated_lines(customers=n_customers, days=days, seed=5):
        ev = orjson.loads(line)
        key = (ev.get("customer_id") or ev.get("anonymous_id")).encode()
        p = partition_for(key.decode(), PARTITIONS)
        out.append((p, Message(TOPIC, p, offsets[p], key, line, (), None)))
        offsets[p] += 1
    return out


def _one_process(records, settings: Settings) -> tuple[list[bytes], dict[str, dict]]:
    """The worker's one-process path: a processor per partition over a dict table."""
    from models.engine import Engine
    from models.segments import load_catalog

    catalog = load_catalog()
    tables = [dict() for _ in range(PARTITIONS)]
    procs = [open_processor(p, Engine(settings.engine_config(), catalog=catalog,
                                      store=TableStore(tables[p])), None, [], "0.1.0",
                            settings.max_message_bytes) for p in range(PARTITIONS)]
    changes: list[bytes] = []
    for i, (p, msg) in enumerate(records):
        out = procs[p].apply(msg)
        changes += [orjson.dumps(c) for c in out.outputs]
        if i % 150 == 149:
            for proc in procs:
                proc.flush_state()
    for proc in procs:
        proc.flush_state()
    return changes, {k.decode(): v for t in tables for k, v in t.items()}


def _split_frames(records) -> list[tuple]:
    frames, batch = [], []
    for i, (p, msg) in enumerate(records):
        event, key = admit(msg, 64 * 1024)
        batch.append(("e", msg.topic, p, msg.offset, msg.key, msg.value, msg.headers,
                      msg.timestamp, event, key))
        if len(batch) == 50:
            frames.append(("batch", i, batch))
            batch = []
        if i % 150 == 149:
            frames.append(("flush", i, list(range(PARTITIONS))))
    frames.append(("batch", len(records), batch))
    frames.append(("flush", len(records) + 1, list(range(PARTITIONS))))
    return frames


def _collect(answers, primaries) -> tuple[list[bytes], dict[str, dict]]:
    changes: list[bytes] = []
    for answer in answers:
        if answer[0] == "batch":
            for res in answer[2]:
                assert res[0] == "ok", res
                changes += [body for _, body, _ in res[2]]
        else:
            for p, (writes, _meta, _snapshot) in answer[2].items():
                for key, raw in writes:
                    if raw is None:
                        primaries[p].delete(key)
                    else:
                        primaries[p].put(key, raw)
    states = {k.decode(): orjson.loads(v) for db in primaries for k, v in db.items()
              if not k.startswith(META_PREFIX)}
    return changes, states


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(partitions=PARTITIONS, models=False, data_dir=str(tmp_path / "data"))


def test_domain_side_gives_the_changes_and_states_of_the_one_process_path(tmp_path, settings):
    records = _records()
    want_changes, want_states = _one_process(records, settings)
    assert len(want_changes) > 50 and len(want_states) > 40

    primaries = [_primary(tmp_path / f"p{p}.db") for p in range(PARTITIONS)]
    side = DomainSide(settings)
    try:
        for p in range(PARTITIONS):
            side.start(p, str(tmp_path / f"p{p}.db"), None)
        answers = []
        for frame in _split_frames(records):
            if frame[0] == "batch":
                answers.append(("batch", frame[1], side.batch(frame[2])))
            else:
                answers.append(("flush", frame[1], side.flush(frame[1], frame[2])))
                _collect([answers.pop()], primaries)     # the parent writes, then says so
                side.written(frame[1])
        changes, states = _collect(answers, primaries)
    finally:
        side.forget(list(range(PARTITIONS)))
        for db in primaries:
            db.close()
    assert changes == want_changes
    assert states == want_states


@pytest.mark.timeout(120)
def test_the_child_process_answers_the_frames_in_order(tmp_path, settings):
    """``python -m streams.domain_process`` over real pipes: the same changes as the one-
    process path, whatever the child's libraries print (its standard output is not the
    frame channel)."""
    records = _records(n_customers=30, days=30)
    want_changes, want_states = _one_process(records, settings)
    primaries = [_primary(tmp_path / f"p{p}.db") for p in range(PARTITIONS)]
    for db in primaries:
        db.flush()
    proc = subprocess.Popen([sys.executable, "-m", "streams.domain_process"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        write_frame(proc.stdin, ("settings", dataclasses.asdict(settings)))
        for p in range(PARTITIONS):
            write_frame(proc.stdin, ("start", p, str(tmp_path / f"p{p}.db"), None))
        answers = []
        for frame in _split_frames(records):
            write_frame(proc.stdin, frame)
            proc.stdin.flush()
            answer = read_frame(proc.stdout)
            assert answer is not None and answer[:2] == frame[:2], answer
            if frame[0] == "flush":
                _collect([answer], primaries)
                write_frame(proc.stdin, ("written", frame[1]))
            else:
                answers.append(answer)
        write_frame(proc.stdin, ("view", 10**6, "customer", records[0][1].key.decode()))
        proc.stdin.flush()
        view = read_frame(proc.stdout)
        # the child widened both pipes before its first frame (a batch frame fits whole)
        capacities = [_pipe_capacity(f.fileno()) for f in (proc.stdin, proc.stdout)]
        write_frame(proc.stdin, ("stop",))
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        changes, states = _collect(answers, primaries)
    finally:
        if proc.poll() is None:
            proc.kill()
        for db in primaries:
            db.close()
    assert changes == want_changes and states == want_states
    key = records[0][1].key.decode()
    state, features, versions, as_of = view[2]
    assert view[0] == "view" and orjson.loads(state) == want_states[key]
    assert orjson.loads(features)["orders"] == want_states[key]["orders"]
    assert versions is None and as_of >= want_states[key]["local_time"]
    if sys.platform == "linux":
        assert capacities == [_pipe_max()] * 2


def _pipe_capacity(fd: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _pipe_max() -> int:
    return int(Path("/proc/sys/fs/pipe-max-size").read_text())


@pytest.mark.skipif(sys.platform != "linux", reason="pipe capacity is a Linux setting")
def test_a_widened_pipe_takes_a_whole_batch_frame_without_a_reader():
    """A batch frame of 1,000 simulator events is 0.4-0.8 MB: with the default 64 KiB pipe,
    the parent's write waited for the child to read, and the child's read for the parent's
    event loop (measured: the child idle 38 % of a uniform-key run)."""
    import os

    r, w = os.pipe()
    try:
        assert widen_pipe(w) == _pipe_max() == _pipe_capacity(r)
        os.set_blocking(w, False)
        frame = b"x" * (_pipe_max() - 4096)
        assert os.write(w, frame) == len(frame)          # all of it, nobody reading yet
    finally:
        os.close(r)
        os.close(w)


def test_a_failing_event_is_dead_lettered_and_leaves_no_trace(tmp_path, settings):
    """An engine failure half way through an event (after it changed the state) inside a
    batch: the event comes back dead-lettered, the other events of the batch keep their
    changes, and the states equal those of the same records without the failing one."""
    from models.engine import Engine

    class Failing(Engine):
        def process(self, event, *args, **kwargs):
            out = super().process(event, *args, **kwargs)
            if str(event.get("event_id", "")).startswith("boom-"):
                raise RuntimeError("injected failure after the state was changed")
            return out

    records = _records(n_customers=20, days=20)
    busiest = max({m.key for _, m in records}, key=lambda k: sum(m.key == k for _, m in records))
    seen, booms, clean = 0, set(), []
    for p, m in records:
        clean.append((p, m))
        if m.key == busiest:
            seen += 1
            if seen in (3, 7):                # a key with unflushed changes in the batch
                ev = orjson.loads(m.value)
                ev["event_id"] = f"boom-{seen}"
                booms.add(m.offset)
                clean[-1] = (p, Message(m.topic, p, m.offset, m.key, orjson.dumps(ev), (),
                                        None))
    want_changes, want_states = _one_process(
        [(p, m) for p, m in clean if not (m.key == busiest and m.offset in booms)], settings)

    primaries = [_primary(tmp_path / f"p{p}.db") for p in range(PARTITIONS)]
    side = DomainSide(settings)
    side._engine_cls = Failing
    try:
        for p in range(PARTITIONS):
            side.start(p, str(tmp_path / f"p{p}.db"), None)
        frames = _split_frames(clean)
        changes, dead = [], []
        for frame in frames:
            if frame[0] == "batch":
                for rec, res in zip(frame[2], side.batch(frame[2])):
                    if res[0] == "dead":
                        dead.append((rec[4], orjson.loads(res[2])))
                    else:
                        changes += [body for _, body, _ in res[2]]
            else:
                _collect([("flush", frame[1], side.flush(frame[1], frame[2]))], primaries)
                side.written(frame[1])
        _, states = _collect([], primaries)
    finally:
        side.forget(list(range(PARTITIONS)))
        for db in primaries:
            db.close()
    assert [(k, d["stage"]) for k, d in dead] == [(busiest, "processing")] * 2, dead
    assert changes == want_changes
    # the failed events left nothing: the states are those of the stream without them, but
    # for the dead letters' own statistics
    for key, state in want_states.items():
        assert states[key] == state, key


def test_a_split_worker_needs_the_rocksdb_store(tmp_path):
    from streams.app import create_app

    with pytest.raises(ValueError, match="needs the RocksDB store"):
        create_app(Settings(data_dir=str(tmp_path), store="memory://", web_enabled=False,
                            domain_process=True))
    app = create_app(Settings(data_dir=str(tmp_path), web_enabled=False, domain_process=True))
    from streams.split import SplitTopology

    assert isinstance(app.retention_topology, SplitTopology)


@settings_hyp(max_examples=300, deadline=None)
@given(refused=st.lists(st.booleans(), min_size=1, max_size=60), chunk=st.integers(1, 9))
def test_frames_cut_a_batch_in_order_with_at_most_chunk_records(refused, chunk):
    """The split worker ships a batch in frames (streams/split.py): every message once, in
    order, each record with its message, every frame but the last full (``chunk``
    records), none without a message."""
    from streams.split import frames

    messages = [(i, "refused" if r else None) for i, r in enumerate(refused)]
    records = [("rec", i) for i, r in enumerate(refused) if not r]
    out = frames(messages, records, chunk)
    assert [m for ms, _ in out for m in ms] == messages
    for ms, recs in out:
        assert ms
        assert recs == [("rec", i) for i, r in ms if r is None]
    assert all(len(recs) == chunk for _, recs in out[:-1])
    assert len(out[-1][1]) <= chunk
