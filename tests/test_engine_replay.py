"""Replay determinism on simulator traffic: same events, same bytes; a run split anywhere
with its state saved and restored gives the same output; the fast path (only the segments
an event can affect) gives exactly what a full evaluation gives."""

from __future__ import annotations

import orjson
import pytest

from models.config import EngineConfig
from models.contract import validate, validate_output
from models.engine import Engine
from models.simulator import SimConfig, simulate

CONFIG = EngineConfig(currency_rates={"USD": 0.8})


@pytest.fixture(scope="module")
def events() -> list[dict]:
    sim = simulate(SimConfig(n_customers=250, days=200, seed=11, usd_share=0.1))
    return [validate(e) for e in sim.events]


def run(events: list[dict], engine: Engine | None = None, until: float | None = None) -> bytes:
    engine = engine or Engine(CONFIG)
    out = []
    for e in events:
        out += engine.process(e)
    if until is not None:
        out += engine.advance(until)
    return b"".join(orjson.dumps(c, option=orjson.OPT_SORT_KEYS) + b"\n" for c in out)


def test_same_events_twice_give_identical_bytes(events):
    a, b = run(events), run(events)
    assert a == b and a.count(b"\n") > 200


def test_every_change_validates_against_its_schema(events):
    engine = Engine(CONFIG)
    n = 0
    for e in events:
        for change in engine.process(e):
            validate_output("segment_change", change)
            n += 1
    assert n > 200


@pytest.mark.parametrize("fraction", [0.0, 0.13, 0.5, 0.77, 1.0])
def test_split_run_with_saved_and_restored_state_is_identical(events, fraction):
    whole = run(events)
    k = int(len(events) * fraction)
    first = Engine(CONFIG)
    head = run(events[:k], first)
    blob = first.dump_state()
    second = Engine(CONFIG)
    second.load_state(bytes(blob))          # only what was saved crosses over
    tail = run(events[k:], second)
    assert head + tail == whole


def test_fast_path_equals_full_evaluation(events):
    fast = run(events, Engine(CONFIG), until=2e9)
    full = run(events, Engine(CONFIG, full_evaluation=True), until=2e9)
    assert fast == full


def test_state_stays_compact(events):
    engine = Engine(CONFIG)
    run(events, engine)
    sizes = [len(orjson.dumps(s.to_dict())) for s in engine.store.values()]
    assert max(sizes) < 8_000, max(sizes)
