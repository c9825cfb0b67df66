"""Bad input, fuzzed: arbitrary bytes and mutated valid events through the edge and the engine.

Properties (hypothesis), for every message:

* :func:`models.contract.parse_event` returns a ``dict`` or raises
  :class:`~models.contract.ContractError` with a known stage and a short, non-empty reason;
  nothing else escapes (no ``KeyError``, ``TypeError``, ``OverflowError`` ...);
* :meth:`models.engine.Engine.process` on what the contract accepted returns changes that
  validate against ``segment_change.v1`` or raises :class:`~models.engine.ProcessingError`;
* the dead-letter record built for any rejection validates against ``dead_letter.v1``;
* over a stream of mixed messages, ``processed + rejected == messages`` and the engine's own
  counters agree (``events`` = processed, duplicates counted once each);
* the per-key state round-trips through JSON (what the table stores) unchanged.

Seeds for the mutations: every ``valid*.json`` of ``schemas/examples`` and a few hundred
simulator events. ``HYPOTHESIS_PROFILE=fuzz-long`` runs 20x more examples (not in CI).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.config import EngineConfig
from models.contract import (STAGES, ContractError, dead_letter_record, parse_event,
                             validate_output)
from models.engine import Engine, ProcessingError
from models.state import CustomerState

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "schemas" / "examples"

settings.register_profile("fuzz-ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("fuzz-long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz-ci")
if PROFILE not in ("fuzz-ci", "fuzz-long"):
    PROFILE = "fuzz-ci"
FUZZ = settings.get_profile(PROFILE)

CONFIG = EngineConfig(currency_rates={"USD": 0.8, "EUR": 0.85})
DL_STAGES = set(STAGES) | {"processing"}


# --------------------------------------------------------------------------- seeds
def _valid_examples() -> list[dict]:
    out = []
    for path in sorted(EXAMPLES.glob("*/valid*.json")):
        if path.parent.name in ("segment_change", "dead_letter", "customer_view", "envelope"):
            continue
        out.append(json.loads(path.read_text()))
    return out


def _simulator_events(n: int = 400) -> list[dict]:
    from models.simulator import SimConfig, simulate

    sim = simulate(SimConfig(n_customers=40, days=60, seed=5, anonymous_visitors=8,
                             usd_share=0.1))
    events = sim.events
    step = max(1, len(events) // n)
    return [copy.deepcopy(e) for e in events[::step][:n]]


SEEDS: list[dict] = _valid_examples() + _simulator_events()
SEED_BYTES: list[bytes] = [orjson.dumps(e) for e in SEEDS]


def test_seeds_are_valid() -> None:
    """The mutation seeds themselves pass the contract and the engine."""
    assert len(SEEDS) > 300
    eng = Engine(CONFIG)
    for raw in SEED_BYTES:
        eng.process(parse_event(raw))


# --------------------------------------------------------------------------- strategies
JSON_SCALARS = (st.none() | st.booleans()
                | st.integers(min_value=-(2**64), max_value=2**64)
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=40))
JSON_VALUES = st.recursive(JSON_SCALARS,
                           lambda c: st.lists(c, max_size=5)
                           | st.dictionaries(st.text(max_size=10), c, max_size=5),
                           max_leaves=20)

#: values that break naive code: boundaries, huge, negative, wrong types, odd strings
EDGE_VALUES = [
    None, True, False, 0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 1e308, -1e308, 5e-324,
    0.0, -0.0, 0.1, 1e15, 999999.99, "", " ", "0", "x" * 129, "x" * 5000, "\u0000", "\ud7ff",
    "é", "🙂" * 40, "1970-01-01T00:00:00Z", "2099-12-31T23:59:59+23:59",
    "2024-02-30T00:00:00Z", "2024-01-01T00:00:00", "2024-01-01T00:00:00.123456789-00:00",
    "order_completed", "erasure_requested", "segment_changed", "USD", "JPY", "gbp", [], {},
    [None], [{}], {"": None}, {"a" * 65: 1}, list(range(300)),
]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indexes) inside a JSON value, the root excluded."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    node = doc
    for k in path[:-1]:
        node = node[k]
    return node


@st.composite
def mutated_events(draw: st.DrawFn) -> dict:
    """A valid seed event with 1-4 structural mutations."""
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        op = draw(st.sampled_from(["delete", "edge", "json", "add", "type_swap", "time"]))
        if op == "add" or not paths:
            target = doc
            if paths and draw(st.booleans()):
                p = draw(st.sampled_from(paths))
                node = _parent(doc, p)[p[-1]]
                if isinstance(node, dict):
                    target = node
            name = draw(st.sampled_from(["customer_id", "anonymous_id", "currency", "total",
                                         "refund_amount", "order_id", "lines", "rating",
                                         "quantity", "price", "list_price", "session_id",
                                         "cart_total_after", "type", "occurred_at", "x"]))
            target[name] = copy.deepcopy(draw(st.sampled_from(EDGE_VALUES) | JSON_VALUES))
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        key = path[-1]
        if op == "delete":
            if isinstance(parent, list):
                parent.pop(key)
            else:
                del parent[key]
        elif op == "edge":
            parent[key] = copy.deepcopy(draw(st.sampled_from(EDGE_VALUES)))
        elif op == "json":
            parent[key] = copy.deepcopy(draw(JSON_VALUES))
        elif op == "type_swap":
            v = parent[key]
            if isinstance(v, bool):
                parent[key] = int(v)
            elif isinstance(v, (int, float)):
                parent[key] = str(v)
            elif isinstance(v, str):
                try:
                    parent[key] = float(v)
                except ValueError:
                    parent[key] = [v]
            else:
                parent[key] = None
        elif op == "time":
            parent[key] = draw(st.sampled_from([
                "1970-01-01T00:00:00Z", "2099-12-31T23:59:59Z", "2099-12-31T23:59:59-23:59",
                "1970-01-01T00:00:00+23:59", "2025-06-01T12:00:00.999999999+05:45",
                "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z"]))
    return doc


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """Byte-level damage to the encoding of a valid event."""
    raw = bytearray(draw(st.sampled_from(SEED_BYTES)))
    op = draw(st.sampled_from(["truncate", "flip", "insert", "splice", "pad"]))
    if op == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw)))])
    if op == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= draw(st.integers(1, 255))
        return bytes(raw)
    if op == "insert":
        i = draw(st.integers(0, len(raw)))
        return bytes(raw[:i]) + draw(st.binary(min_size=1, max_size=8)) + bytes(raw[i:])
    if op == "splice":
        other = draw(st.sampled_from(SEED_BYTES))
        i, j = draw(st.integers(0, len(raw))), draw(st.integers(0, len(other)))
        return bytes(raw[:i]) + other[j:]
    return bytes(raw) + b" " * draw(st.sampled_from([0, 1, 70_000]))


# --------------------------------------------------------------------------- the harness
class Outcome:
    """What happened to each message of a run."""

    def __init__(self) -> None:
        self.processed = 0
        self.rejected: Counter[str] = Counter()
        self.changes: list[dict] = []


def dumps(value: Any) -> bytes:
    """JSON bytes of any value (the stdlib, so integers beyond 64 bits are kept)."""
    return json.dumps(value).encode("utf-8")


def _check_error(exc: BaseException, raw: bytes) -> str:
    """A rejection must name its stage and reason, and make a valid dead letter."""
    if isinstance(exc, ContractError):
        assert exc.stage in STAGES, exc.stage
        assert exc.reason and len(exc.reason) <= 2000, exc.reason
        stage = exc.stage
    else:
        assert isinstance(exc, ProcessingError), exc
        assert str(exc)
        stage = "processing"
    rec = dead_letter_record(exc, raw, b"k", source_topic="shop.clickstream", partition=0,
                             offset=1, app_version="0.1.0", at=0.0)
    validate_output("dead_letter", rec)
    assert rec["stage"] in DL_STAGES
    return stage


def feed(engine: Engine, raw: bytes, out: Outcome, received_at: float | None = None) -> None:
    """parse + process one message; only ContractError / ProcessingError may be raised."""
    try:
        event = parse_event(raw)
        changes = engine.process(event, received_at=received_at)
    except (ContractError, ProcessingError) as exc:
        out.rejected[_check_error(exc, raw)] += 1
        return
    for c in changes:
        validate_output("segment_change", c)
    out.changes.extend(changes)
    out.processed += 1


def _unique_ids(changes: list[dict]) -> list[str]:
    return list(dict.fromkeys(c["event_id"] for c in changes))


def _roundtrip_states(engine: Engine) -> None:
    """Every state survives the table's JSON round trip unchanged."""
    for key, state in engine.store.items():
        again = CustomerState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        assert again == state, key


# --------------------------------------------------------------------------- properties
@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_rejected_with_a_reason_or_processed(raw: bytes) -> None:
    out = Outcome()
    feed(Engine(CONFIG), raw, out)
    assert out.processed + sum(out.rejected.values()) == 1


@FUZZ
@given(JSON_VALUES)
def test_arbitrary_json_values(value: Any) -> None:
    raw = dumps(value)
    out = Outcome()
    feed(Engine(CONFIG), raw, out)
    assert out.processed + sum(out.rejected.values()) == 1
    if not isinstance(value, dict):
        assert out.rejected["json"] == 1


@FUZZ
@given(mutated_bytes())
def test_damaged_bytes(raw: bytes) -> None:
    out = Outcome()
    feed(Engine(CONFIG), raw, out)
    assert out.processed + sum(out.rejected.values()) == 1
    if len(raw) > 64 * 1024:
        assert out.rejected["size"] == 1


@FUZZ
@given(mutated_events())
def test_mutated_events(doc: dict) -> None:
    raw = dumps(doc)
    eng = Engine(CONFIG)
    out = Outcome()
    feed(eng, raw, out)
    assert out.processed + sum(out.rejected.values()) == 1
    _roundtrip_states(eng)


@FUZZ
@given(st.lists(st.one_of(mutated_events().map(dumps), mutated_bytes(),
                          st.sampled_from(SEED_BYTES), st.binary(max_size=64)),
                min_size=1, max_size=40),
       st.randoms(use_true_random=False))
def test_mixed_streams_count_up(raws: list[bytes], rnd: Any) -> None:
    """A stream of good, damaged and repeated messages on one engine: every message is
    processed or rejected, and the engine's counters agree with the harness."""
    raws = raws + [rnd.choice(raws) for _ in range(len(raws) // 3)]   # redeliveries
    eng = Engine(CONFIG)
    out = Outcome()
    for raw in raws:
        feed(eng, raw, out)
    assert out.processed + sum(out.rejected.values()) == len(raws)
    # the engine counts every accepted event once (duplicates included, and counted apart)
    assert eng.counters["events"] == out.processed
    assert eng.counters["duplicates"] <= out.processed
    assert eng.counters["changes"] == sum(c["type"] == "segment_changed" for c in out.changes)
    assert eng.counters["erasures"] == sum(c["type"] == "customer_forgotten" for c in out.changes)
    repeated = [c for c in out.changes if c["type"] != "customer_forgotten"]
    assert len({c["event_id"] for c in repeated}) == len(repeated), "change ids repeat"
    _roundtrip_states(eng)
    # the engine's JSON dump restores to the same state (the worker's restore path)
    blob = eng.dump_state()
    again = Engine(CONFIG)
    again.load_state(blob)
    assert again.dump_state() == blob


@FUZZ
@given(st.lists(st.sampled_from(range(len(SEED_BYTES))), min_size=2, max_size=30))
def test_redelivery_changes_nothing(picks: list[int]) -> None:
    """Each message delivered twice in a row gives the same state and the same changes,
    deduplicated by id, as once (the duplicate is dropped by its event id; a repeated
    erasure repeats its ``customer_forgotten`` under the same id, since the erased key
    keeps no memory)."""
    once, twice = Engine(CONFIG), Engine(CONFIG)
    o1, o2 = Outcome(), Outcome()
    for i in picks:
        feed(once, SEED_BYTES[i], o1)
        feed(twice, SEED_BYTES[i], o2)
        feed(twice, SEED_BYTES[i], o2)
    assert _unique_ids(o1.changes) == _unique_ids(o2.changes)
    repeated = [c for c in o2.changes if c["type"] != "customer_forgotten"]
    assert len(repeated) == len({c["event_id"] for c in repeated})
    for key, state in once.store.items():
        other = twice.store[key]
        a, b = state.to_dict(), other.to_dict()
        assert b["duplicates"] >= a["duplicates"]
        for d in (a, b):
            d.pop("duplicates")
        assert a == b, key


@FUZZ
@given(st.lists(st.sampled_from(range(len(SEED_BYTES))), min_size=1, max_size=30),
       st.floats(min_value=-30 * 86400, max_value=30 * 86400, allow_nan=False))
def test_received_at_guard(picks: list[int], skew: float) -> None:
    """With a receive time, an event more than ``max_future_skew`` ahead of it is refused
    (and leaves no trace: no state, no watermark move); anything else is applied."""
    from models.clock import parse_time

    eng = Engine(CONFIG)
    out = Outcome()
    limit = CONFIG.max_future_skew
    for i in picks:
        raw = SEED_BYTES[i]
        t = parse_time(orjson.loads(raw)["occurred_at"])
        received = t - skew          # the event claims to be ``skew`` s after it was received
        before = (eng.clock.max_seen, eng.dump_state())
        n_rej = out.rejected["processing"]
        feed(eng, raw, out, received_at=received)
        if skew > limit:
            assert out.rejected["processing"] == n_rej + 1
            assert (eng.clock.max_seen, eng.dump_state()) == before
        else:
            assert out.rejected["processing"] == n_rej
    assert out.processed + sum(out.rejected.values()) == len(picks)


def test_no_float_is_left_non_finite() -> None:
    """The largest amounts the contract allows cannot push state to inf/nan (JSON has
    neither: a table value would lose the field)."""
    from tests.eventkit import Shop

    shop = Shop()
    eng = Engine(CONFIG)
    big = None
    for total in (1e6, 1e7, 1e9, 1e12):
        ev = shop.order("c1", day=1, total=total)
        try:
            parse_event(orjson.dumps(ev))
        except ContractError:
            continue
        big = total
        for _ in range(50):
            eng.process(parse_event(orjson.dumps(shop.order("c1", day=1, total=total))))
    assert big is not None
    for state in eng.store.values():
        for name, value in state.to_dict().items():
            if isinstance(value, float):
                assert math.isfinite(value), name


@FUZZ
@given(st.lists(st.one_of(mutated_events().map(dumps), st.sampled_from(SEED_BYTES)),
                min_size=1, max_size=25))
def test_mutated_events_with_the_online_models(raws: list[bytes]) -> None:
    """The same through the full scorer (``models.scoring.ModelHub``)."""
    from models.scoring import HubConfig, ModelHub

    eng = Engine(CONFIG, scorer=ModelHub(HubConfig(snapshot_key=b"fuzz")))
    out = Outcome()
    for raw in raws:
        feed(eng, raw, out)
    assert out.processed + sum(out.rejected.values()) == len(raws)
    _roundtrip_states(eng)


def _key_for(raw: bytes, how: str) -> bytes | None:
    try:
        doc = orjson.loads(raw)
        key = doc.get("customer_id") or doc.get("anonymous_id")
    except Exception:  # noqa: BLE001 - not JSON / not an object
        key = None
    if how == "none":
        return None
    if how == "wrong":
        return b"someone-else"
    return key.encode("utf-8") if isinstance(key, str) else b"k"


@FUZZ
@given(st.lists(st.tuples(st.one_of(mutated_events().map(dumps), mutated_bytes(),
                                    st.sampled_from(SEED_BYTES)),
                          st.sampled_from(["right", "right", "right", "wrong", "none"])),
                min_size=1, max_size=30),
       st.lists(st.integers(0, 29), max_size=10))
def test_partition_processor_dead_letters_or_processes_every_message(
        msgs: list[tuple[bytes, str]], replays: list[int]) -> None:
    """The worker's per-message path (``streams.processor.PartitionProcessor``, no broker):
    every message, including replays of earlier offsets after a "crash", ends as processed,
    skipped (replayed) or one dead letter with a valid ``dead_letter.v1`` body."""
    from streams.processor import Message, PartitionProcessor

    eng = Engine(CONFIG)
    proc = PartitionProcessor(0, eng, "0.1.0", 64 * 1024, clock=lambda: 0.0)
    delivered = [Message("shop.clickstream", 0, off, _key_for(raw, how), raw)
                 for off, (raw, how) in enumerate(msgs)]
    delivered += [delivered[i] for i in replays if i < len(delivered)]
    counts: Counter[str] = Counter()
    for m in delivered:
        outcome = proc.handle(m)
        if outcome.dead_letter is not None:
            assert not outcome.outputs
            body = outcome.dead_letter.body
            validate_output("dead_letter", body)
            assert body["stage"] in DL_STAGES and body["error"]
            assert body["offset"] == m.offset and outcome.dead_letter.value == m.value
            headers = dict(outcome.dead_letter.headers)
            assert headers["dlq.stage"].decode() == body["stage"]
            counts["dead"] += 1
            # a failed event leaves nothing behind (what the agent does)
            eng.clear_dirty()
        elif outcome.skipped:
            counts["skipped"] += 1
        else:
            counts["processed"] += 1
        for c in outcome.outputs:
            validate_output("segment_change", c)
    assert sum(counts.values()) == len(delivered)
    assert (proc.processed, proc.dead_lettered, proc.skipped) == (
        counts["processed"], counts["dead"], counts["skipped"])
    assert counts["processed"] <= len(msgs)
