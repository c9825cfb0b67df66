"""The event contract: schema files, examples, the edge validator and its error reasons."""

from __future__ import annotations

import copy
import json
import pathlib
import time

import orjson
import pytest

from models import contract
from models.contract import (EVENT_TYPES, MAX_EVENT_BYTES, OUTPUT_SCHEMAS, ContractError, decode,
                             event_key, parse_event, validate, validate_output)

try:        # the reference implementation (test dependency): only the cross-checks need it
    import jsonschema
    import referencing
except ImportError:  # pragma: no cover
    jsonschema = referencing = None

needs_jsonschema = pytest.mark.skipif(jsonschema is None, reason="jsonschema>=4.20 not installed")

SCHEMAS = contract.schema_dir()
EXAMPLES = SCHEMAS / "examples"
ALL_SCHEMAS = sorted(EVENT_TYPES | OUTPUT_SCHEMAS | {"envelope"})


def _examples(kind: str) -> list[tuple[str, pathlib.Path]]:
    return [(d.name, f) for d in sorted(EXAMPLES.iterdir()) if d.is_dir()
            for f in sorted(d.glob(f"{kind}*.json"))]


VALID = _examples("valid")
INVALID = _examples("invalid")


def _ids(cases):
    return [f"{name}/{path.stem}" for name, path in cases]


@pytest.fixture(scope="module")
def registry():
    if jsonschema is None:
        pytest.skip("jsonschema>=4.20 not installed")
    docs = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    resources = [(d["$id"], referencing.Resource.from_contents(d)) for d in docs]
    return referencing.Registry().with_resources(resources)


@pytest.fixture(scope="module")
def reference(registry):
    """name -> jsonschema.Draft202012Validator of the raw 2020-12 file."""
    return {name: jsonschema.Draft202012Validator(contract.load_schema(name), registry=registry)
            for name in ALL_SCHEMAS}


def _check(name: str, obj: dict) -> dict:
    """What the service runs for an example of schema ``name``."""
    if name in OUTPUT_SCHEMAS:
        return validate_output(name, obj)
    return validate(obj)


# --------------------------------------------------------------------------- the files

def test_one_file_per_type_and_nothing_else():
    files = {p.name for p in SCHEMAS.glob("*.json")}
    assert files == {f"{n}.v1.schema.json" for n in ALL_SCHEMAS}


@needs_jsonschema
@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_files_are_valid_2020_12_schemas(name):
    schema = contract.load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.v1.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_input_schemas_pin_their_type(name):
    schema = contract.load_schema(name)
    assert schema["properties"]["type"] == {"const": name}
    assert schema["allOf"] == [{"$ref": "envelope.v1.schema.json"}]


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_compiled_form_uses_only_shared_keywords(name):
    def walk(node):
        if isinstance(node, dict):
            yield from node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    inlined = contract.compiled_schema(name)
    keys = set(walk(inlined))
    assert not keys & {"$ref", "$defs", "$id", "format", "default", "unevaluatedProperties", "prefixItems",
                       "dependentRequired", "dependentSchemas", "$dynamicRef"}


def _bounded(node, where="#", branch=False):
    """Every string has a maxLength (or a closed enum/const) and every array a maxItems.

    Inside anyOf / if / then / else, a node that only narrows the type of a property (already
    bounded where the property is declared) is skipped."""
    if isinstance(node, dict):
        if branch and set(node) <= {"type"}:
            return
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types and "enum" not in node and "const" not in node:
            assert "maxLength" in node, f"unbounded string at {where}"
        if "array" in types:
            assert "maxItems" in node, f"unbounded array at {where}"
        if "object" in types:
            bounded = [node] + [s for s in node.get("allOf", []) if isinstance(s, dict)]
            assert any("maxProperties" in s for s in bounded), f"unbounded object at {where}"
        for key, value in node.items():
            inner = branch or key in ("anyOf", "oneOf", "if", "then", "else")
            if key in ("properties", "patternProperties"):
                for k, v in value.items():
                    _bounded(v, f"{where}/{k}", branch)
            elif key in ("allOf", "anyOf", "oneOf"):
                for i, v in enumerate(value):
                    _bounded(v, f"{where}/{key}/{i}", inner)
            elif isinstance(value, dict) and key not in ("const", "enum"):
                _bounded(value, f"{where}/{key}", inner)


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_string_array_and_object_is_bounded(name):
    _bounded(contract.compiled_schema(name))


def test_disallowed_keyword_is_refused(tmp_path, monkeypatch):
    for p in SCHEMAS.glob("*.schema.json"):
        (tmp_path / p.name).write_text(p.read_text())
    doc = json.loads((tmp_path / "search.v1.schema.json").read_text())
    doc["unevaluatedProperties"] = False
    (tmp_path / "search.v1.schema.json").write_text(json.dumps(doc))
    monkeypatch.setenv("RETENTION_SCHEMA_DIR", str(tmp_path))
    assert contract.schema_dir() == tmp_path
    with pytest.raises(ValueError, match="unevaluatedProperties"):
        contract._compile_all()


# --------------------------------------------------------------------------- examples

def test_examples_cover_every_schema_and_the_required_cases():
    names = {n for n, _ in VALID}
    assert names == set(ALL_SCHEMAS)
    assert len(INVALID) >= 30
    reasons = {path.stem for _, path in INVALID}
    for needed in ("invalid_missing_event_id", "invalid_timestamp_without_zone", "invalid_negative_quantity",
                   "invalid_negative_total", "invalid_rating_6", "invalid_unknown_type", "invalid_huge_string",
                   "invalid_lines_over_limit", "invalid_missing_both_ids", "invalid_schema_version_major"):
        assert needed in reasons, needed


@pytest.mark.parametrize("name,path", VALID, ids=_ids(VALID))
def test_valid_examples_are_accepted(name, path):
    event = json.loads(path.read_text())
    out = _check(name, copy.deepcopy(event))
    if name in OUTPUT_SCHEMAS:
        assert out == event
    else:
        # null optional fields are dropped, everything else is kept as is
        assert out == {k: v for k, v in event.items() if v is not None}
        assert event_key(out) in (event.get("customer_id"), event.get("anonymous_id"))
        assert parse_event(orjson.dumps(event)) == out


@pytest.mark.parametrize("name,path", INVALID, ids=_ids(INVALID))
def test_invalid_examples_are_rejected_with_the_precise_reason(name, path):
    case = json.loads(path.read_text())
    expect = case["expect"]
    with pytest.raises(ContractError) as info:
        _check(name, case["event"])
    err = info.value
    assert (err.stage, err.path) == (expect["stage"], expect["path"]), str(err)
    assert expect["contains"] in err.reason, str(err)
    assert str(err) == (f"{err.stage}: {err.path}: {err.reason}" if err.path else f"{err.stage}: {err.reason}")
    if name not in OUTPUT_SCHEMAS:
        raw = orjson.dumps(case["event"])
        if len(raw) <= MAX_EVENT_BYTES:
            with pytest.raises(ContractError) as again:
                parse_event(raw)
            assert (again.value.stage, again.value.path) == (err.stage, err.path)


@pytest.mark.parametrize("name,path", VALID + INVALID, ids=_ids(VALID + INVALID))
def test_fastjsonschema_and_jsonschema_2020_12_agree(name, path, reference):
    obj = json.loads(path.read_text())
    obj = obj["event"] if path.stem.startswith("invalid") else obj
    schema = name          # examples of <type>/ keep that type; envelope/ ones go to the envelope alone
    fast = contract._validator(schema)
    try:
        fast(copy.deepcopy(obj))
        fast_ok = True
    except contract.JsonSchemaValueException:
        fast_ok = False
    ref_errors = sorted(reference[schema].iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert fast_ok == (not ref_errors), (fast_ok, [e.message[:200] for e in ref_errors])
    if schema != "envelope":                 # the quick validator (jsonschema_rs) too
        assert contract._quick_validator(schema).is_valid(obj) == (not ref_errors)


def test_validators_agree_on_mutations_of_an_order(reference):
    """A small fuzz: single-field mutations of a valid order give the same verdict in both."""
    base = json.loads((EXAMPLES / "order_completed" / "valid.json").read_text())
    values = [None, "", "x" * 200, -1, 0, 1, 1.5, 10**13, True, [], {}, "EUR", "2024-01-01T00:00:00Z"]
    fast = contract._validator("order_completed")
    quick = contract._quick_validator("order_completed")
    for key in list(base) + ["lines.0.quantity", "lines.0.price", "lines.0.product_id", "lines.0.discount"]:
        for value in values:
            ev = copy.deepcopy(base)
            if key.startswith("lines."):
                _, i, field = key.split(".")
                ev["lines"][int(i)][field] = value
            else:
                ev[key] = value
            try:
                fast(copy.deepcopy(ev))
                fast_ok = True
            except contract.JsonSchemaValueException:
                fast_ok = False
            ref_ok = reference["order_completed"].is_valid(ev)
            assert fast_ok == ref_ok, (key, value)
            assert quick.is_valid(ev) == ref_ok, (key, value)


def test_a_record_only_the_quick_validator_refuses_is_refused():
    """The quick validator (jsonschema_rs, ECMA-262 patterns) and the detailed one
    (fastjsonschema, Python patterns) can differ; then the record is refused, with the rule
    and a bounded value, never accepted. Python's ``\\d`` takes any Unicode digit."""
    checks = contract._Checks({"$schema": contract._DRAFT07, "type": "object",
                               "properties": {"n": {"type": "string", "pattern": "^\\d+$"}}})
    checks({"n": "12"})
    odd = {"n": "\u0661\u0662"}                      # Arabic-Indic digits
    checks.detailed(odd)                            # fastjsonschema alone accepts it
    assert not checks.quick.is_valid(odd)
    with pytest.raises(ContractError) as info:
        checks(odd)
    assert (info.value.stage, info.value.path) == ("schema", "n")
    assert "(pattern)" in info.value.reason
    with pytest.raises(ContractError) as info:       # both refuse: the detailed reason
        checks({"n": 5})
    assert info.value.reason.startswith("must be string")


# --------------------------------------------------------------------------- bytes

def _raw(**overrides) -> bytes:
    event = json.loads((EXAMPLES / "page_view" / "valid_minimal.json").read_text())
    event.update(overrides)
    return orjson.dumps(event)


@pytest.mark.parametrize("raw,stage,contains", [
    (b"", "json", "empty"),
    (b"   ", "json", "not valid JSON"),
    (b"\xff\xfe{}", "utf8", "byte 0"),
    (b'{"type": "search", "query": "caf\xe9"}', "utf8", "not valid UTF-8"),       # latin-1, not UTF-8
    (b'{"query": "\xed\xa0\x80"}', "utf8", "not valid UTF-8"),                    # encoded surrogate
    (b"\xef\xbb\xbf{}", "json", "not valid JSON"),                                # BOM
    (b"{not json}", "json", "not valid JSON"),
    (b'{"a": 1', "json", "not valid JSON"),
    (b'{"a": NaN}', "json", "not valid JSON"),
    (b'{"a": 1e400}', "json", "not valid JSON"),
    (b"[1, 2]", "json", "got array"),
    (b'"event"', "json", "got string"),
    (b"null", "json", "got null"),
    (b"42", "json", "got integer"),
    (b"[" * 2000 + b"]" * 2000, "json", "not valid JSON"),                       # nesting bomb
    (None, "json", "tombstone"),
])
def test_decode_rejects_bad_bytes(raw, stage, contains):
    with pytest.raises(ContractError) as info:
        decode(raw)
    assert info.value.stage == stage and contains in info.value.reason
    assert info.value.path is None


def test_size_is_checked_first_and_exactly():
    assert decode(b"{}", max_bytes=2) == {}
    with pytest.raises(ContractError) as info:
        decode(b"{} ", max_bytes=2)
    assert info.value.stage == "size" and "3 bytes" in info.value.reason
    huge = b"\xff" * (MAX_EVENT_BYTES + 1)                          # oversized AND not UTF-8: size wins
    with pytest.raises(ContractError) as info:
        parse_event(huge)
    assert info.value.stage == "size"
    event = json.loads(_raw())
    event["x_padding"] = "p" * MAX_EVENT_BYTES
    with pytest.raises(ContractError, match="^size: "):
        parse_event(orjson.dumps(event))


def test_decode_accepts_bytearray_memoryview_and_str():
    raw = _raw()
    assert decode(bytearray(raw)) == decode(memoryview(raw)) == decode(raw.decode()) == orjson.loads(raw)
    with pytest.raises(ContractError, match="^utf8: "):
        decode('{"q": "\ud800"}')


def test_unicode_is_fine():
    ev = parse_event(_raw(type="search", query="chaussures rouges été 👟"))
    assert ev["query"] == "chaussures rouges été 👟"


def test_non_object_and_missing_type():
    with pytest.raises(ContractError, match="^schema: event must be a JSON object"):
        validate([])  # type: ignore[arg-type]
    with pytest.raises(ContractError) as info:
        validate({"type": 7})
    assert (info.value.stage, info.value.path) == ("unknown_type", "type")


# --------------------------------------------------------------------------- semantics

def test_null_optional_fields_are_dropped_required_nulls_rejected():
    ev = parse_event(_raw(customer_id=None, referrer=None, context=None))
    assert "customer_id" not in ev and "referrer" not in ev and "context" not in ev
    with pytest.raises(ContractError) as info:
        parse_event(_raw(event_id=None))
    assert (info.value.stage, info.value.path) == ("schema", "event_id")


def test_unknown_top_level_properties_are_allowed():
    ev = parse_event(_raw(x_new_field={"nested": [1, 2, 3]}))
    assert ev["x_new_field"] == {"nested": [1, 2, 3]}


@pytest.mark.parametrize("ts,ok", [
    ("2024-03-31T01:30:00+01:00", True),
    ("2024-03-31T01:30:00.123456789Z", True),
    ("2024-10-27T02:30:00-05:30", True),
    ("2024-03-31T01:30:00", False),
    ("2024-03-31 01:30:00Z", False),
    ("2024-03-31T01:30Z", False),
    ("2024-03-31T01:30:00+0100", False),
    ("2024-03-31t01:30:00z", False),
    ("2024-03-31T24:00:00Z", False),
    ("2023-02-29T00:00:00Z", False),      # passes the pattern, fails parse_time
    ("2024-03-31T01:30:00Z\n", False),    # Python's $ matches before a final newline
    (1711845000, False),
])
def test_timestamps(ts, ok):
    if ok:
        assert parse_event(_raw(occurred_at=ts))["occurred_at"] == ts
    else:
        with pytest.raises(ContractError) as info:
            parse_event(_raw(occurred_at=ts))
        assert (info.value.stage, info.value.path) == ("schema", "occurred_at")


@pytest.mark.parametrize("version,ok", [("1", True), ("1.0", True), ("1.12", True), ("1.2.3", True),
                                        ("2", False), ("0.9", False), ("10", False), ("1.", False),
                                        ("v1", False), (1, False), ("", False)])
def test_schema_version_major_must_be_1(version, ok):
    if ok:
        parse_event(_raw(schema_version=version))
    else:
        with pytest.raises(ContractError) as info:
            parse_event(_raw(schema_version=version))
        assert info.value.path == "schema_version"


def test_integral_float_is_an_integer_in_both_validators():
    raw = (EXAMPLES / "product_added" / "valid_minimal.json").read_text()
    ev = json.loads(raw)
    ev["quantity"] = 2.0
    assert validate(ev)["quantity"] == 2.0


def test_reasons_never_echo_long_values():
    secret = "Jane Doe, 12 Private Road, jane@example.org " * 100
    for overrides in ({"type": secret}, {"url": secret}, {"customer_id": secret}, {"page_type": secret},
                      {"event_id": {"name": secret}}):
        with pytest.raises(ContractError) as info:
            parse_event(_raw(**overrides))
        assert "Jane" not in str(info.value), str(info.value)
        assert len(str(info.value)) < 300


def test_short_values_are_shown_truncated():
    with pytest.raises(ContractError) as info:
        parse_event(_raw(page_type="landing"))
    assert 'got "landing"' in info.value.reason
    with pytest.raises(ContractError) as info:
        parse_event(_raw(type="x" * 40))
    assert "a string of 40 characters" in info.value.reason


def test_event_key():
    assert event_key({"customer_id": "c", "anonymous_id": "a"}) == "c"
    assert event_key({"customer_id": None, "anonymous_id": "a"}) == "a"
    for bad in ({}, {"customer_id": ""}, {"customer_id": 5}):
        with pytest.raises(ContractError) as info:
            event_key(bad)
        assert info.value.stage == "key"


def test_contract_error_pickles_and_dicts():
    import pickle
    err = ContractError("schema", "must be >= 0 (minimum), got -1", "total")
    back = pickle.loads(pickle.dumps(err))
    assert (back.stage, back.reason, back.path) == (err.stage, err.reason, err.path)
    assert err.to_dict() == {"stage": "schema", "error": err.reason, "path": "total"}


def test_dead_letter_record_round_trip():
    raw = _raw(quantity=0, type="product_added", product_id="p", price=1)
    try:
        parse_event(raw)
    except ContractError as exc:
        rec = contract.dead_letter_record(exc, raw, b"anon_9", source_topic="retention.events", partition=1,
                                          offset=99, app_version="0.1.0", at=1719620000.5,
                                          event=orjson.loads(raw))
    validate_output("dead_letter", rec)
    assert (rec["stage"], rec["path"], rec["event_type"]) == ("schema", "quantity", "product_added")
    assert rec["at"] == "2024-06-29T00:13:20.500Z"
    big = b"x" * (MAX_EVENT_BYTES + 10)
    rec = contract.dead_letter_record(RuntimeError("boom"), big, None, source_topic="t", partition=None,
                                      offset=None, app_version="0.1.0", at="2024-06-29T00:00:00Z")
    validate_output("dead_letter", rec)
    assert rec["stage"] == "processing" and rec["error"] == "RuntimeError: boom"
    assert rec["value_truncated"] and rec["value_size"] == MAX_EVENT_BYTES + 10


def test_validate_output_unknown_name():
    with pytest.raises(ValueError):
        validate_output("nope", {})


def test_schema_dir_default_is_repo_schemas(monkeypatch):
    monkeypatch.delenv("RETENTION_SCHEMA_DIR", raising=False)
    assert contract.schema_dir() == pathlib.Path(contract.__file__).resolve().parents[1] / "schemas"


# --------------------------------------------------------------------------- speed

def test_validation_cost_of_a_typical_order():
    event = json.loads((EXAMPLES / "order_completed" / "valid.json").read_text())
    raw = orjson.dumps(event)
    validate(dict(event))                               # compile outside the loop
    n = 10_000
    t0 = time.perf_counter()
    for _ in range(n):
        validate(event)
    t1 = time.perf_counter()
    for _ in range(n):
        parse_event(raw)
    t2 = time.perf_counter()
    print(f"\nvalidate(order_completed): {(t1 - t0) / n * 1e6:.1f} µs/event; "
          f"parse_event (decode + validate, {len(raw)} bytes): {(t2 - t1) / n * 1e6:.1f} µs/event")


@pytest.mark.parametrize("when,ok", [
    ("1970-01-01T00:00:00+23:59", False),     # written 1970, the instant is in 1969 (UTC)
    ("1970-01-01T00:00:00Z", True),
    ("2099-12-31T23:59:59-23:59", False),     # written 2099, the instant is in 2100
    ("2099-12-31T23:59:59Z", True),
])
def test_the_instant_not_only_the_written_year_is_bounded(when, ok):
    """Found by tests/test_fuzz.py: an accepted event at "1970-01-01T00:00:00+23:59" produced
    a change "at" 1969-12-31 that the output contract (UTC, 1970-2099) refused."""
    ev = {"event_id": "e1", "type": "search", "occurred_at": when, "customer_id": "c1",
          "schema_version": "1", "query": "x"}
    if ok:
        assert contract.parse_event(orjson.dumps(ev))["occurred_at"] == when
    else:
        with pytest.raises(ContractError) as err:
            contract.parse_event(orjson.dumps(ev))
        assert (err.value.stage, err.value.path) == ("schema", "occurred_at")
        assert "1970-01-01T00:00:00Z" in err.value.reason
