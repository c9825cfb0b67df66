"""The event contract at the edge: bytes in, a validated ``dict`` out, or a precise reason.

The contract lives in ``schemas/`` as JSON Schema draft 2020-12 files, one per event type
(``<type>.v1.schema.json``) plus the shared ``envelope.v1.schema.json``, and three output
schemas (``segment_change``, ``dead_letter``, ``customer_view``). This module loads them
once and inlines their ``$ref`` s. Each schema is checked by two validators:

- a ``jsonschema_rs`` validator (Rust, draft 2020-12) first: it only says yes or no, in a
  sixth of the time (about 1.3 us for a page view, 3 us for a segment change here);
- a fastjsonschema validator, compiled with draft-07 semantics (fastjsonschema has no
  2020-12), only for what the first refused: it names the rule and the field that failed,
  which the reasons below are made of. Should it accept what the first refused, the event is
  refused anyway, with the first one's message.

The files are restricted to keywords that mean the same in both drafts (checked when
loading), and the tests check that both validators agree with
``jsonschema.Draft202012Validator`` on every example and on mutated events.

Stages of a rejection, in order: ``size`` (more than ``max_bytes``), ``utf8`` (not strict
UTF-8), ``json`` (not JSON, or not a JSON object), ``unknown_type`` (``type`` missing or not
an input type), ``schema`` (the schema of the type, then the timestamps must parse with
:func:`models.clock.parse_time`). ``key`` is raised by :func:`event_key` when an event has no
usable key. Reasons never echo the event: values are truncated and free text is not shown.

>>> ev = parse_event(b'{"event_id": "e1", "type": "search", "occurred_at": "2024-03-31T01:30:00+01:00",'
...                  b' "schema_version": "1", "anonymous_id": "a-9", "query": "red shoes", "sent_at": null}')
>>> event_key(ev), "sent_at" in ev
('a-9', False)
>>> try:
...     parse_event(b'{"event_id": "e2", "type": "search", "occurred_at": "2024-03-31T01:30:00",'
...                 b' "schema_version": "1", "anonymous_id": "a-9", "query": "x"}')
... except ContractError as exc:
...     print(exc.stage, exc.path)
schema occurred_at
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urldefrag, urljoin

import fastjsonschema
import jsonschema_rs
import orjson
from fastjsonschema import JsonSchemaValueException

from models.clock import TimeError, format_time, parse_time

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "OUTPUT_SCHEMAS",
    "SCHEMA_VERSION",
    "STAGES",
    "ContractError",
    "dead_letter_record",
    "decode",
    "event_key",
    "load_schema",
    "parse_event",
    "schema_dir",
    "validate",
    "validate_output",
]

MAX_EVENT_BYTES = 64 * 1024
SCHEMA_VERSION = "1"

EVENT_TYPES: frozenset[str] = frozenset({
    "page_view", "product_viewed", "search", "product_added", "product_removed",
    "checkout_started", "checkout_step", "order_completed", "order_refunded", "order_cancelled",
    "review_submitted", "support_ticket", "delivery_issue", "erasure_requested",
})
OUTPUT_SCHEMAS: frozenset[str] = frozenset({"segment_change", "dead_letter", "customer_view"})

#: stages of :class:`ContractError`; the dead-letter schema adds ``processing``.
STAGES = ("size", "utf8", "json", "schema", "unknown_type", "key")

_DRAFT07 = "http://json-schema.org/draft-07/schema#"
_DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"
_VALUE_SHOWN = 32        # characters of a string value shown in a reason
_REASON_MAX = 500

# Keywords allowed in schemas/: same meaning in draft-07 and draft 2020-12.
_SUBSCHEMA_MAP = {"properties", "patternProperties"}
_SUBSCHEMA_ONE = {"additionalProperties", "items", "propertyNames", "not", "if", "then", "else",
                  "contains"}
_SUBSCHEMA_LIST = {"allOf", "anyOf", "oneOf"}
_ASSERTIONS = {"type", "enum", "const", "minLength", "maxLength", "pattern", "minimum", "maximum",
               "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
               "uniqueItems", "minProperties", "maxProperties", "required"}
_ANNOTATIONS = {"title", "description", "examples", "$comment", "deprecated", "readOnly",
                "writeOnly"}
_ROOT_ONLY = {"$schema", "$id", "$defs"}
ALLOWED_KEYWORDS = frozenset(_SUBSCHEMA_MAP | _SUBSCHEMA_ONE | _SUBSCHEMA_LIST | _ASSERTIONS
                             | _ANNOTATIONS | _ROOT_ONLY | {"$ref"})


class ContractError(Exception):
    """A message that breaks the contract.

    ``stage`` is one of :data:`STAGES`, ``reason`` a human message without personal data,
    ``path`` the field path (``"lines[2].quantity"``) or ``None``.

    >>> str(ContractError("schema", "must be >= 1 (minimum), got 0", "lines[2].quantity"))
    'schema: lines[2].quantity: must be >= 1 (minimum), got 0'
    >>> str(ContractError("size", "too big"))
    'size: too big'
    """

    def __init__(self, stage: str, reason: str, path: str | None = None) -> None:
        super().__init__(stage, reason, path)
        self.stage = stage
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        if self.path:
            return f"{self.stage}: {self.path}: {self.reason}"
        return f"{self.stage}: {self.reason}"

    def to_dict(self) -> dict:
        """``{"stage", "error", "path"}`` as used by the dead-letter record."""
        return {"stage": self.stage, "error": self.reason, "path": self.path}


# --------------------------------------------------------------------------- loading

def schema_dir() -> pathlib.Path:
    """The ``schemas/`` directory: ``$RETENTION_SCHEMA_DIR`` or ``<repo root>/schemas``."""
    env = os.environ.get("RETENTION_SCHEMA_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[1] / "schemas"


def load_schema(name: str) -> dict:
    """The raw draft 2020-12 document ``schemas/<name>.v1.schema.json`` (e.g. ``"envelope"``)."""
    path = schema_dir() / f"{name}.v1.schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


class _Inliner:
    """Resolves every ``$ref`` of the schema files by copying its target in place.

    Relative references are resolved against the ``$id`` of the file they occur in. A
    ``$ref`` with sibling keywords is merged when they do not overlap (2020-12 semantics:
    both apply), else wrapped in ``allOf``. ``$defs``, ``$id`` and ``$schema`` disappear.
    """

    def __init__(self, docs: dict[str, dict]) -> None:
        self.docs = docs

    def resolve(self, ref: str, base: str) -> tuple[Any, str]:
        uri, fragment = urldefrag(urljoin(base, ref))
        if uri not in self.docs:
            raise ValueError(f"unresolvable $ref {ref!r} (from {base})")
        node: Any = self.docs[uri]
        if fragment:
            if not fragment.startswith("/"):
                raise ValueError(f"only JSON-pointer fragments are supported: {ref!r}")
            for part in fragment[1:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, uri

    def inline(self, node: Any, base: str, where: str = "#", depth: int = 0) -> Any:
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            raise ValueError(f"{where}: a schema must be an object or a boolean")
        if depth > 64:
            raise ValueError(f"{where}: $ref nesting too deep (cycle?)")
        unknown = set(node) - ALLOWED_KEYWORDS
        if unknown:
            raise ValueError(f"{where}: keywords {sorted(unknown)} are not allowed in schemas/ "
                             f"(must mean the same in draft-07 and 2020-12)")
        if isinstance(node.get("items"), list):
            raise ValueError(f"{where}: array-form 'items' differs between drafts")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _ROOT_ONLY or key == "$ref":
                continue
            if key in _SUBSCHEMA_MAP:
                out[key] = {k: self.inline(v, base, f"{where}/{key}/{k}", depth)
                            for k, v in value.items()}
            elif key in _SUBSCHEMA_ONE:
                out[key] = self.inline(value, base, f"{where}/{key}", depth)
            elif key in _SUBSCHEMA_LIST:
                out[key] = [self.inline(v, base, f"{where}/{key}/{i}", depth)
                            for i, v in enumerate(value)]
            else:
                out[key] = copy.deepcopy(value)
        if "$ref" in node:
            target, uri = self.resolve(node["$ref"], base)
            resolved = self.inline(target, uri, node["$ref"], depth + 1)
            if not isinstance(resolved, dict):
                return resolved if not out else {**out, "allOf": [resolved]}
            assertions = {k: v for k, v in out.items() if k not in _ANNOTATIONS}
            if set(assertions) & set(resolved):
                out.setdefault("allOf", []).append(resolved)
                return out
            merged = dict(resolved)
            merged.update(out)
            return merged
        return out


def _load_documents(directory: pathlib.Path) -> dict[str, dict]:
    if not directory.is_dir():
        raise FileNotFoundError(f"schema directory not found: {directory} "
                                f"(set RETENTION_SCHEMA_DIR to the repository's schemas/)")
    docs: dict[str, dict] = {}
    for path in sorted(directory.glob("*.schema.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        docs[doc.get("$id") or path.resolve().as_uri()] = doc
    return docs


def _compile_all() -> tuple[dict[str, _Checks], dict[str, _Checks], dict[str, dict], Callable]:
    directory = schema_dir()
    docs = _load_documents(directory)
    by_file = {uri.rsplit("/", 1)[-1]: uri for uri in docs}
    inliner = _Inliner(docs)
    inlined: dict[str, dict] = {}
    for name in sorted(EVENT_TYPES | OUTPUT_SCHEMAS | {"envelope"}):
        file = f"{name}.v1.schema.json"
        if file not in by_file:
            raise FileNotFoundError(f"missing schema {directory / file}")
        uri = by_file[file]
        schema = inliner.inline(docs[uri], uri, file)
        schema["$schema"] = _DRAFT07
        inlined[name] = schema
    inputs = {name: _Checks(inlined[name]) for name in EVENT_TYPES}
    outputs = {name: _Checks(inlined[name]) for name in OUTPUT_SCHEMAS}
    envelope = fastjsonschema.compile(inlined["envelope"], use_default=False, use_formats=False)
    return inputs, outputs, inlined, envelope


class _Checks:
    """The two validators of one schema (see the module docstring). Calling it raises
    :class:`ContractError` (stage ``schema``) for a record the schema refuses."""

    __slots__ = ("detailed", "quick")

    def __init__(self, schema: dict) -> None:
        self.detailed = fastjsonschema.compile(schema, use_default=False, use_formats=False)
        self.quick = jsonschema_rs.validator_for({**schema, "$schema": _DRAFT2020})

    def __call__(self, record: Any) -> None:
        try:
            if self.quick.is_valid(record):
                return
        except (ValueError, TypeError, OverflowError):
            pass           # not a JSON value as jsonschema_rs takes it: the detailed check says
        try:
            self.detailed(record)
        except JsonSchemaValueException as exc:
            raise _translate(exc) from None
        try:
            error = next(iter(self.quick.iter_errors(record)), None)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ContractError("schema", f"not a JSON value: {str(exc)[:200]}") from None
        if error is not None:
            path = None
            for part in error.instance_path:
                path = f"{path or ''}[{part}]" if isinstance(part, int) else _join(path, part)
            rule = error.schema_path[-1] if error.schema_path else "schema"
            raise ContractError("schema", f"must match its schema ({rule}), got "
                                          f"{_short(error.instance)}", path)


_LOCK = threading.Lock()
_INPUT: dict[str, _Checks] | None = None
_OUTPUT: dict[str, _Checks] | None = None
_INLINED: dict[str, dict] | None = None
_ENVELOPE: Callable | None = None


def _load() -> dict[str, _Checks]:
    global _INPUT, _OUTPUT, _INLINED, _ENVELOPE
    with _LOCK:
        if _INPUT is None:
            _INPUT, _OUTPUT, _INLINED, _ENVELOPE = _compile_all()
    return _INPUT


def _validator(name: str) -> Callable:
    """The compiled fastjsonschema function of any schema (``"envelope"`` included); for tests."""
    inputs = _load()
    if name == "envelope":
        assert _ENVELOPE is not None
        return _ENVELOPE
    assert _OUTPUT is not None
    return (inputs.get(name) or _OUTPUT[name]).detailed


def _quick_validator(name: str) -> Any:
    """The ``jsonschema_rs`` validator of an input or output schema; for tests."""
    inputs = _load()
    assert _OUTPUT is not None
    return (inputs.get(name) or _OUTPUT[name]).quick


def compiled_schema(name: str) -> dict:
    """The inlined draft-07 form of ``name`` that fastjsonschema compiled (for debugging)."""
    _load()
    assert _INLINED is not None
    return copy.deepcopy(_INLINED[name])


# --------------------------------------------------------------------------- reasons

def _short(value: Any) -> str:
    """A bounded description of a value, for reasons (never a whole object or long text)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= _VALUE_SHOWN else text[:_VALUE_SHOWN] + "…"
    if isinstance(value, str):
        if len(value) > _VALUE_SHOWN:
            return f"a string of {len(value)} characters"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return f"an object of {len(value)} properties"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return type(value).__name__


_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
              float: "number", type(None): "null"}


def _path_of(name: str | None) -> str | None:
    """``"data.lines[2].quantity"`` -> ``"lines[2].quantity"``; the root -> ``None``."""
    if not name or name == "data":
        return None
    path = name[4:] if name.startswith("data") else name
    return path[1:] if path.startswith(".") else (path or None)


def _join(path: str | None, key: str) -> str:
    return f"{path}.{key}" if path else key


def _translate(exc: JsonSchemaValueException) -> ContractError:
    err = _translate_rule(exc)
    definition = exc.definition
    title = definition.get("title") if isinstance(definition, dict) and exc.rule != "pattern" else None
    if title and err.path and exc.rule not in ("required", "anyOf"):
        article = "an" if title[0].lower() in "aeiou" else "a"
        err = ContractError(err.stage, f"{err.reason}; expected {article} {title}", err.path)
    return err


def _translate_rule(exc: JsonSchemaValueException) -> ContractError:
    rule, value, definition = exc.rule, exc.value, exc.definition or {}
    d = definition.get(rule) if isinstance(definition, dict) and rule else None
    path = _path_of(exc.name)
    got = _short(value)
    if rule == "required" and isinstance(value, dict):
        missing = [k for k in d if k not in value]
        first = missing[0] if missing else "?"
        return ContractError("schema", f"required property '{first}' is missing", _join(path, first))
    if rule == "anyOf" and d and all(isinstance(o, dict) and o.get("required") for o in d):
        names = ", ".join(o["required"][0] for o in d)
        return ContractError("schema", f"at least one of {names} is required (as a non-null string)",
                             path)
    if rule == "type":
        types = d if isinstance(d, list) else [d]
        return ContractError("schema", f"must be {' or '.join(types)}, got "
                                       f"{_JSON_TYPE.get(type(value), type(value).__name__)}", path)
    if rule == "const":
        return ContractError("schema", f"must be {json.dumps(d)}, got {got}", path)
    if rule == "enum":
        allowed = ", ".join(json.dumps(x) for x in d if x is not None)
        return ContractError("schema", f"must be one of {allowed}, got {got}", path)
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[rule]
        return ContractError("schema", f"must be {op} {d} ({rule}), got {got}", path)
    if rule in ("minLength", "maxLength"):
        word = "at least" if rule == "minLength" else "at most"
        n = len(value) if isinstance(value, str) else "?"
        return ContractError("schema", f"must be {word} {d} characters ({rule}), got {n}", path)
    if rule in ("minItems", "maxItems"):
        word = "at least" if rule == "minItems" else "at most"
        n = len(value) if isinstance(value, list) else "?"
        return ContractError("schema", f"must have {word} {d} items ({rule}), got {n}", path)
    if rule in ("minProperties", "maxProperties"):
        word = "at least" if rule == "minProperties" else "at most"
        n = len(value) if isinstance(value, dict) else "?"
        return ContractError("schema", f"must have {word} {d} properties ({rule}), got {n}", path)
    if rule == "pattern":
        title = definition.get("title")
        what = f"an {title}" if title and title[0].lower() in "aeiou" else (f"a {title}" if title else None)
        if what:
            return ContractError("schema", f"must be {what} (pattern), got {got}", path)
        return ContractError("schema", f"must match pattern {d} (pattern), got {got}", path)
    if rule == "propertyNames" and isinstance(value, dict) and isinstance(d, dict):
        limit = d.get("maxLength")
        bad = next((k for k in value if limit is not None and len(k) > limit), None)
        shown = f" ({_short(bad)})" if bad is not None else ""
        return ContractError("schema", f"property names must be at most {limit} characters "
                                       f"(propertyNames){shown}", path)
    if rule == "uniqueItems":
        return ContractError("schema", "must not contain duplicate items (uniqueItems)", path)
    return ContractError("schema", f"breaks rule {rule!r}, got {got}", path)


# --------------------------------------------------------------------------- API

def decode(raw: bytes, max_bytes: int = MAX_EVENT_BYTES) -> dict:
    """Bytes of one message -> a JSON object, checking size, strict UTF-8 and JSON in that order.

    >>> decode(b'{"a": 1}')
    {'a': 1}
    >>> for bad in (b"x" * 10, b"\\xff{}", b"[1]", b""):
    ...     try:
    ...         decode(bad, max_bytes=8)
    ...     except ContractError as exc:
    ...         print(exc)
    size: message of 10 bytes exceeds the limit of 8 bytes
    utf8: not valid UTF-8 at byte 0: invalid start byte
    json: must be a JSON object, got array
    json: empty message
    """
    if raw is None:
        raise ContractError("json", "message has no value (null / tombstone)")
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ContractError("utf8", f"not valid UTF-8 at character {exc.start}: {exc.reason}") from None
    elif not isinstance(raw, bytes):
        raw = bytes(raw)
    size = len(raw)
    if size > max_bytes:
        raise ContractError("size", f"message of {size} bytes exceeds the limit of {max_bytes} bytes")
    if not size:
        raise ContractError("json", "empty message")
    try:
        obj = orjson.loads(raw)      # validates UTF-8 strictly as well; only classify on failure
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise ContractError("utf8", f"not valid UTF-8 at byte {uexc.start}: {uexc.reason}") from None
        raise ContractError("json", f"not valid JSON: {str(exc)[:200]}") from None
    if type(obj) is not dict:
        raise ContractError("json", f"must be a JSON object, got {_JSON_TYPE.get(type(obj), 'value')}")
    return obj


def validate(event: dict) -> dict:
    """Check one decoded input event against the schema of its ``type``.

    Returns the same ``dict`` with optional top-level fields that are ``null`` removed, so the
    domain sees an optional field either absent or of its declared type.

    >>> ev = {"event_id": "e1", "type": "product_added", "occurred_at": "2024-01-05T10:00:00Z",
    ...       "schema_version": "1", "customer_id": "c1", "product_id": "p1", "quantity": 0,
    ...       "price": 9.5}
    >>> try:
    ...     validate(ev)
    ... except ContractError as exc:
    ...     print(exc)
    schema: quantity: must be >= 1 (minimum), got 0
    """
    if type(event) is not dict:
        raise ContractError("schema", f"event must be a JSON object, got {_JSON_TYPE.get(type(event), 'value')}")
    validators = _INPUT if _INPUT is not None else _load()
    type_ = event.get("type")
    check = validators.get(type_) if type(type_) is str else None
    if check is None:
        if "type" not in event:
            raise ContractError("unknown_type", "required property 'type' is missing", "type")
        raise ContractError("unknown_type", f"unknown event type {_short(type_)}", "type")
    check(event)
    for field in ("occurred_at", "sent_at"):
        value = event.get(field)
        if value is not None:
            try:
                t = parse_time(value)
            except TimeError:
                raise ContractError("schema", f"not a valid date-time (e.g. day out of range), got "
                                              f"{_short(value)}", field) from None
            # the pattern bounds the written year (1970-2099), not the instant: with its zone
            # offset "1970-01-01T00:00:00+23:59" is in 1969, and outputs are written in UTC
            if not _EARLIEST <= t < _LATEST:
                raise ContractError("schema", "must be from 1970-01-01T00:00:00Z to before "
                                              f"2100-01-01T00:00:00Z, got {_short(value)}", field)
    if None in event.values():
        for key in [k for k, v in event.items() if v is None]:
            del event[key]
    return event


_EARLIEST = 0.0                  # 1970-01-01T00:00:00Z
_LATEST = 4102444800.0           # 2100-01-01T00:00:00Z


def parse_event(raw: bytes, max_bytes: int = MAX_EVENT_BYTES) -> dict:
    """:func:`decode` then :func:`validate`."""
    return validate(decode(raw, max_bytes))


def validate_output(schema_name: str, record: dict) -> dict:
    """Check an output record (``segment_change``, ``dead_letter`` or ``customer_view``) before producing.

    Raises :class:`ContractError` (stage ``schema``); ``null`` values are kept (they mean something
    in outputs). Returns ``record`` unchanged.
    """
    if _OUTPUT is None:               # compiled once (under a lock); not on every record
        _load()
    assert _OUTPUT is not None
    check = _OUTPUT.get(schema_name.removesuffix(".v1"))
    if check is None:
        raise ValueError(f"unknown output schema {schema_name!r}; expected one of {sorted(OUTPUT_SCHEMAS)}")
    check(record)
    return record


def event_key(event: dict) -> str:
    """The partition / table key: ``customer_id``, else ``anonymous_id``.

    >>> event_key({"customer_id": "c1", "anonymous_id": "a1"}), event_key({"anonymous_id": "a1"})
    ('c1', 'a1')
    >>> event_key({"customer_id": None})
    Traceback (most recent call last):
    ...
    models.contract.ContractError: key: event has neither customer_id nor anonymous_id
    """
    key = event.get("customer_id") or event.get("anonymous_id")
    if not key or type(key) is not str:
        raise ContractError("key", "event has neither customer_id nor anonymous_id")
    return key


def dead_letter_record(error: BaseException, value: bytes | None, key: bytes | None, *,
                       source_topic: str, partition: int | None, offset: int | None,
                       app_version: str, at: float | str, event: dict | None = None,
                       max_value_bytes: int = MAX_EVENT_BYTES) -> dict:
    """Build a ``dead_letter`` v1 record for a rejected message (pure: ``at`` is given).

    A :class:`ContractError` gives its stage/reason/path; any other exception becomes stage
    ``processing`` with its class name and a truncated message. The raw value is kept up to
    ``max_value_bytes`` (``value_truncated`` tells).

    >>> err = ContractError("json", "empty message")
    >>> rec = dead_letter_record(err, b"", b"c1", source_topic="events", partition=0, offset=7,
    ...                          app_version="0.1.0", at=0.0)
    >>> rec["stage"], rec["key_b64"], rec["at"]
    ('json', 'YzE=', '1970-01-01T00:00:00Z')
    >>> validate_output("dead_letter", rec) is rec
    True
    """
    if isinstance(error, ContractError):
        stage, reason, path = error.stage, error.reason, error.path
    else:
        stage, path = "processing", None
        reason = f"{type(error).__name__}: {str(error)[:_REASON_MAX]}"
    size = None if value is None else len(value)
    kept = value if value is None or size <= max_value_bytes else value[:max_value_bytes]
    record = {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key_b64": None if key is None else base64.b64encode(bytes(key)).decode("ascii"),
        "value_b64": None if kept is None else base64.b64encode(bytes(kept)).decode("ascii"),
        "stage": stage,
        "error": (reason or "unknown error")[:2000],
        "path": path[:512] if path else None,
        "app_version": app_version,
        "schema_version": SCHEMA_VERSION,
        "at": at if isinstance(at, str) else format_time(at),
    }
    if size is not None:
        record["value_size"] = size
        record["value_truncated"] = size > max_value_bytes
    if isinstance(event, dict):
        eid, etype = event.get("event_id"), event.get("type")
        record["event_id"] = eid[:128] if isinstance(eid, str) else None
        record["event_type"] = etype[:64] if isinstance(etype, str) else None
    return record
