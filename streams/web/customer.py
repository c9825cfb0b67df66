"""The customer lookup document (``schemas/customer_view.v1.schema.json``), built from a
customer's state with no Faust in sight.

:func:`customer_view` turns a :class:`~models.state.CustomerState` and its features (the
engine's ``features_of``: profile metrics plus the current scores) into the JSON an operator
gets from ``GET /customers/{id}``: the flat profile, the open session and cart, the scores with
their reasons, the segments with their entry times and holdout flag, and the last changes.
Times are ISO-8601 UTC. The document is checked against the schema by the view before it is
sent (``models.contract.validate_output("customer_view", doc)``).

>>> from models.state import CustomerState
>>> from models.segments import load_catalog
>>> s = CustomerState(key="c1", customer_id="c1", orders=1, segments={"first_time": 0.0},
...                   recent_changes=[["1970-01-01T00:00:00Z", "first_time", "entered", "ab"]])
>>> doc = customer_view(s, {"orders": 1, "aov": 12.3456789}, load_catalog(), as_of=60.0)
>>> doc["profile"]["aov"], doc["segments"][0]["segment"], doc["segments"][0]["since"]
(12.3457, 'first_time', '1970-01-01T00:00:00Z')
>>> from models.contract import validate_output
>>> validate_output("customer_view", doc) is doc
True
"""

from __future__ import annotations

import math
from typing import Any

from models.clock import format_time
from models.engine import in_holdout
from models.segments import Catalog
from models.state import CustomerState

__all__ = ["customer_view", "SCORE_FIELDS"]

#: score entries kept as they are (numbers, booleans); times are formatted, dicts dropped
SCORE_FIELDS = ("churn_risk", "abandon_risk", "clv", "clv_historical", "clv_simple",
                "clv_btyd", "p_alive", "next_order_at", "due_to_reorder")
_TIME_SCORES = frozenset({"next_order_at"})
_MAX_STR = 256


def _scalar(v: Any) -> Any:
    """A JSON scalar for the profile: rounded floats, no NaN/inf, short strings."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return round(v, 4) if math.isfinite(v) else None
    if isinstance(v, str):
        return v[:_MAX_STR]
    return str(v)[:_MAX_STR]


def _time(t: Any) -> str | None:
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
        return format_time(float(t))
    return t if isinstance(t, str) else None


def _drivers(items: Any) -> list[dict[str, Any]]:
    out = []
    for d in items or ():
        if not isinstance(d, dict) or "feature" not in d:
            continue
        c = d.get("contribution")
        known = isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
        row: dict[str, Any] = {"feature": str(d["feature"])[:128],
                               "contribution": round(float(c), 4) if known else 0.0}
        if not known:   # an input shown for context (e.g. the gaps behind next_order_at)
            row["informational"] = True
        if "value" in d:
            row["value"] = _scalar(d["value"])
        out.append(row)
    return out[:64]


def _session(sess: dict[str, Any] | None) -> dict[str, Any] | None:
    if not sess:
        return None
    items = [{"product_id": str(pid), "quantity": line[0], "price": line[1]}
             for pid, line in (sess.get("cart") or {}).items()]
    cart = None
    if items or sess.get("cart_id") is not None:
        cart = {"cart_id": sess.get("cart_id"), "items": items[:1000],
                "value": sess.get("cart_value"), "item_count": sess.get("cart_items")}
    return {"session_id": sess.get("id"), "started_at": _time(sess.get("started_at")),
            "last_event_at": _time(sess.get("last_at")), "events": sess.get("events"),
            "page_views": sess.get("page_views"), "product_views": sess.get("product_views"),
            "searches": sess.get("searches"), "checkout": sess.get("checkout"),
            "cart": cart}


def _scores(state: CustomerState, features: dict[str, Any]) -> dict[str, Any]:
    raw = state.scores or {}
    out: dict[str, Any] = {}
    for name in SCORE_FIELDS:
        v = raw.get(name, features.get(name))
        if name in _TIME_SCORES:
            v = _time(v)
        elif v is not None and not isinstance(v, (bool, int, float)):
            continue
        out[name] = _scalar(v)
    if out.get("clv_historical") is None:
        out["clv_historical"] = _scalar(features.get("clv_historical"))
    for model, method in (raw.get("methods") or {}).items():
        if isinstance(method, str):
            out[f"method_{model}"[:64]] = method[:_MAX_STR]
    reasons = raw.get("reasons") or {}
    out["reasons"] = {str(m)[:64]: _drivers(items) for m, items in reasons.items()
                      if isinstance(items, (list, tuple))}
    return out


def customer_view(state: CustomerState, features: dict[str, Any], catalog: Catalog, *,
                  as_of: float | None = None, partition: int | None = None,
                  served_by: str | None = None,
                  model_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``customer_view`` v1 document of one customer (see the module docstring)."""
    profile = {str(k)[:64]: _scalar(v) for k, v in features.items()
               if not isinstance(v, (dict, list, tuple))}
    segments = []
    for name, since in sorted(state.segments.items()):
        seg = catalog.segments.get(name)
        segments.append({"segment": name, "since": _time(since),
                         "holdout": bool(seg and in_holdout(state.key, name,
                                                            seg.holdout_percent))})
    changes = []
    for row in reversed(state.recent_changes or []):   # newest first
        try:
            at, segment, change, eid = row
        except (TypeError, ValueError):
            continue
        changes.append({"at": at, "segment": segment, "change": change, "event_id": eid})
    doc: dict[str, Any] = {
        "schema_version": "1",
        "key": state.key,
        "customer_id": state.customer_id,
        "anonymous": bool(state.anonymous),
        "profile": profile,
        "session": _session(state.session),
        "scores": _scores(state, features),
        "segments": segments,
        "recent_changes": changes[:100],
        "aliases": [str(a) for a in state.aliases][:32],
        "definition_version": state.definition_version or catalog.definition_version,
        "as_of": _time(as_of if as_of is not None else state.local_time),
        "last_event_at": _time(state.last_event_at),
        "due_at": _time(state.due_at),
    }
    if model_versions:
        doc["model_versions"] = {str(k)[:64]: str(v)[:_MAX_STR] for k, v in model_versions.items()}
    if partition is not None:
        doc["partition"] = partition
    if served_by is not None:
        doc["served_by"] = served_by
    return doc
