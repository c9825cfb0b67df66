"""Segment catalogue: declarative, versioned definitions with hysteresis, dwell and due times.

Definitions live in a TOML file (``models/segments.toml`` by default) that an operator can
edit without Python. Each segment has an ``enter`` and an ``exit`` condition (hysteresis:
enter at one level, leave at another) and a ``min_dwell`` (a member stays at least that
long). Conditions are expressions over the feature vocabulary (``models.features``).

Expressions are the language of `simpleeval <https://pypi.org/project/simpleeval/>`_:
comparisons, ``and``/``or``/``not``, arithmetic, numbers, ``True``/``False``/``None`` and the
functions ``min``, ``max``, ``abs``. Every expression is checked when the file is loaded:
it must parse, use only those constructs and only known feature names, and evaluate under
``simpleeval`` on a sample. The checked syntax tree is then compiled once, so evaluation
costs well under a microsecond; no other code can be expressed (no attributes, no
subscripts, no other calls, no names outside the vocabulary). A comparison with a missing
value (``None``) makes the whole condition false.

A condition that compares a *time feature* (``days_since_last_order >= 180``) with a value
that does not move with time gets a due time: the event time at which it will flip if the
customer stays quiet. The engine files the customer under that time in its due-time index.

>>> cat = load_catalog()
>>> "vip" in cat.segments and cat.version != ""
True
>>> rule = Rule("orders >= 1 and days_since_last_order >= 180")
>>> rule({"orders": 2, "days_since_last_order": 200.0})
True
>>> rule({"orders": 2, "days_since_last_order": None})
False
"""

from __future__ import annotations

import ast
import copy
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import simpleeval

from .features import FEATURE_NAMES, TIME_FEATURES, feature_group

__all__ = ["Catalog", "DefinitionError", "Rule", "SegmentDef", "load_catalog", "parse_duration",
           "DEFAULT_CATALOG_PATH"]

DEFAULT_CATALOG_PATH = Path(__file__).with_name("segments.toml")

_FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs}
_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Compare, ast.Eq, ast.NotEq, ast.Lt,
    ast.LtE, ast.Gt, ast.GtE, ast.Name, ast.Load, ast.Constant, ast.Call,
)
_EPSILON = 0.001  # seconds: a strict comparison flips just after its boundary
_GLOBALS: dict[str, Any] = {"__builtins__": {}, **_FUNCTIONS}  # the only globals a rule sees


class DefinitionError(ValueError):
    """A segment definitions file or expression that cannot be used, with the reason."""


def parse_duration(value: str | int | float) -> float:
    """Parse ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``"0s"`` (or a number of seconds).

    >>> parse_duration("7d"), parse_duration("90m"), parse_duration(5)
    (604800.0, 5400.0, 5.0)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(value))
    if not m:
        raise DefinitionError(f"not a duration: {value!r} (use e.g. 30m, 12h, 7d)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def _check_tree(tree: ast.AST, text: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise DefinitionError(f"{text!r}: {type(node).__name__} is not allowed in a condition")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool, type(None))):
            raise DefinitionError(f"{text!r}: only numbers, True, False and None may appear as values")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise DefinitionError(f"{text!r}: only min(), max() and abs() may be called")
        elif isinstance(node, ast.Name):
            if node.id in _FUNCTIONS:
                continue
            if node.id not in FEATURE_NAMES:
                raise DefinitionError(f"{text!r}: unknown feature {node.id!r}")
            names.add(node.id)
    return names


class Rule:
    """One checked, compiled condition."""

    __slots__ = ("text", "names", "timed", "_test", "_time_terms")

    def __init__(self, text: str) -> None:
        self.text = " ".join(str(text).split())
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            raise DefinitionError(f"{self.text!r}: not an expression ({exc.msg})") from None
        self.names = frozenset(_check_tree(tree, self.text))
        sample = {n: 0 for n in FEATURE_NAMES}
        try:
            simpleeval.SimpleEval(names=sample, functions=dict(_FUNCTIONS)).eval(self.text)
        except ZeroDivisionError:
            pass
        except Exception as exc:  # simpleeval rejects what its language does not have
            raise DefinitionError(f"{self.text!r}: {exc}") from None
        self._test = _as_function(tree.body, f"<rule {self.text}>")
        self._time_terms = _time_terms(tree)
        self.timed = bool(self._time_terms)

    def __call__(self, features: dict[str, Any]) -> bool:
        try:
            return bool(self._test(features))
        except (TypeError, ZeroDivisionError):
            return False

    def candidate_times(self, features: dict[str, Any], anchors: dict[str, float | None],
                        after: float) -> list[float]:
        """Event times after ``after`` at which a time comparison of this rule flips."""
        out = []
        for name, other in self._time_terms:
            anchor = anchors.get(name)
            if anchor is None:
                continue
            try:
                value = other(features)
            except (TypeError, ZeroDivisionError):
                continue
            if value is None or isinstance(value, bool):
                continue
            t = anchor + float(value) * TIME_FEATURES[name][1]
            if t + _EPSILON > after:    # a strict comparison at `after` flips just after it
                out.append(t)
        return out

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"


def _time_terms(tree: ast.Expression) -> list[tuple[str, Any]]:
    """(time feature, compiled other side) for each comparison of a time feature."""
    terms = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or len(node.ops) != 1:
            continue
        left, right = node.left, node.comparators[0]
        for this, other in ((left, right), (right, left)):
            if isinstance(this, ast.Name) and this.id in TIME_FEATURES:
                if any(isinstance(n, ast.Name) and n.id in TIME_FEATURES for n in ast.walk(other)):
                    continue
                terms.append((this.id, _as_function(other, "<term>")))
    return terms


class _FeatureLookups(ast.NodeTransformer):
    """``orders`` -> ``f["orders"]`` (the functions min, max and abs stay names)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in _FUNCTIONS:
            return node
        return ast.copy_location(ast.Subscript(value=ast.Name("f", ast.Load()),
                                               slice=ast.Constant(node.id), ctx=ast.Load()), node)


def _as_function(expr: ast.expr, name: str) -> Callable[[dict[str, Any]], Any]:
    """``lambda f: <expr>`` over a features dict, from a checked tree (see
    :func:`_check_tree`), with no builtins but min, max and abs: twice as fast as evaluating
    the expression with the dict as its namespace, which every event does a dozen times. A
    missing feature raises ``KeyError`` (as it raised ``NameError``)."""
    body = _FeatureLookups().visit(copy.deepcopy(expr))
    fn = ast.Expression(ast.Lambda(
        args=ast.arguments(posonlyargs=[], args=[ast.arg("f")], kwonlyargs=[], kw_defaults=[],
                           defaults=[]), body=body))
    ast.fix_missing_locations(fn)
    return eval(compile(fn, name, "eval"), dict(_GLOBALS))  # noqa: S307 (checked tree)


@dataclass(frozen=True)
class SegmentDef:
    name: str
    description: str
    enter: Rule
    exit: Rule
    min_dwell: float = 0.0
    holdout_percent: float = 0.0
    drivers: tuple[str, ...] = ()
    names: frozenset = field(default_factory=frozenset)
    groups: frozenset = field(default_factory=frozenset)   # feature groups its rules read

    @staticmethod
    def due_time(rule: Rule, features: dict[str, Any], anchors: dict[str, float | None],
                 now: float, before: float | None = None) -> float | None:
        """The first event time after ``now`` (and before ``before``) at which ``rule`` holds
        if nothing else changes, or None. ``features`` is probed in place and restored."""
        if not rule.timed:
            return None
        times = rule.candidate_times(features, anchors, now)
        if not times:
            return None
        if before is not None:
            times = [t for t in times if t < before]
        if not times:
            return None
        saved = {name: features.get(name) for name in anchors}
        if len(times) > 1:
            times = sorted(set(times))
        try:
            for t in times:
                for probe in (t, t + _EPSILON):
                    if probe <= now:
                        continue
                    for name, anchor in anchors.items():
                        features[name] = None if anchor is None else (probe - anchor) / TIME_FEATURES[name][1]
                    if rule(features):
                        return probe
        finally:
            features.update(saved)
        return None


@dataclass(frozen=True)
class Catalog:
    version: str
    digest: str
    segments: dict[str, SegmentDef]
    source: str = ""

    @property
    def definition_version(self) -> str:
        """The operator's version plus a digest of the file, stamped on every change."""
        return f"{self.version}+{self.digest}"


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and check a definitions file (default: ``RETENTION_SEGMENTS`` or the built-in one)."""
    path = Path(path or os.environ.get("RETENTION_SEGMENTS") or DEFAULT_CATALOG_PATH)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DefinitionError(f"cannot read segment definitions {path}: {exc.strerror}") from None
    return parse_catalog(raw, source=str(path))


def parse_catalog(raw: bytes, source: str = "<memory>") -> Catalog:
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DefinitionError(f"{source}: not valid TOML: {exc}") from None
    version = str(doc.get("version", "")).strip()
    if not version:
        raise DefinitionError(f"{source}: a top-level version = \"...\" is required")
    defaults = doc.get("defaults", {})
    segs = doc.get("segments")
    if not isinstance(segs, dict) or not segs:
        raise DefinitionError(f"{source}: no [segments.<name>] tables")
    out: dict[str, SegmentDef] = {}
    for name, spec in segs.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            raise DefinitionError(f"{source}: segment name {name!r} must be lower_snake_case")
        unknown = set(spec) - {"description", "enter", "exit", "min_dwell", "holdout_percent", "drivers"}
        if unknown:
            raise DefinitionError(f"{source}: segment {name}: unknown keys {sorted(unknown)}")
        for key in ("enter", "exit"):
            if not isinstance(spec.get(key), str):
                raise DefinitionError(f"{source}: segment {name}: '{key}' condition is required")
        try:
            enter, exit_ = Rule(spec["enter"]), Rule(spec["exit"])
            dwell = parse_duration(spec.get("min_dwell", defaults.get("min_dwell", 0)))
        except DefinitionError as exc:
            raise DefinitionError(f"{source}: segment {name}: {exc}") from None
        holdout = float(spec.get("holdout_percent", defaults.get("holdout_percent", 0)))
        if not 0 <= holdout <= 50:
            raise DefinitionError(f"{source}: segment {name}: holdout_percent must be within 0..50")
        drivers = tuple(spec.get("drivers", ()))
        out[name] = SegmentDef(name=name, description=str(spec.get("description", "")),
                               enter=enter, exit=exit_, min_dwell=dwell, holdout_percent=holdout,
                               drivers=drivers, names=enter.names | exit_.names,
                               groups=frozenset(feature_group(n) for n in enter.names | exit_.names))
    digest = hashlib.sha256(raw).hexdigest()[:8]
    return Catalog(version=version, digest=digest, segments=out, source=source)
