"""Fixed-order numeric encodings of model inputs, stored compactly with each prediction.

A prediction's inputs are kept in ``CustomerState.model_data`` until its label arrives, as a
list of floats in the order of the spec (rounded to 5 significant digits), so the learner is
later taught exactly what the model saw. The spec's ``version`` is stored with them: inputs
recorded under another version are dropped rather than learned with the wrong meaning.

>>> enc = Encoder("t1", [("orders", "log"), ("checkout_started", "flag")])
>>> x = enc.encode({"orders": 3, "checkout_started": True})
>>> enc.pack(x)
[1.3862943611198906, 1.0]
>>> enc.decode(enc.pack(x)) == x
True
>>> enc.display("orders", x["orders"])
3.0
>>> compact(x["orders"])
1.3863
>>> ratio = Encoder("t2", [("per_order", "ln")])
>>> r = ratio.encode({"per_order": 2.5})
>>> compact(r["per_order"]), ratio.display("per_order", r["per_order"])
(0.91629, 2.5)
"""

from __future__ import annotations

import math
from math import isfinite, log, log1p
from typing import Any, Sequence

__all__ = ["Encoder", "compact"]

_LOGIT_HALF = 0.0


def compact(v: float) -> float:
    """Round to 5 significant digits (keeps the JSON of the state small).

    Each prediction stores a dozen inputs, most of them values seen before (0 and 1 make
    two thirds, a hundred values nine tenths on simulator traffic), so the first
    ``_COMPACT_KEPT`` distinct ones are remembered. Zero is never looked up: ``-0.0 == 0.0``
    as a key, and it keeps its sign.

    >>> compact(-0.0), compact(0), compact(123456.0), compact(True)
    (-0.0, 0.0, 123460.0, 1.0)
    """
    if not v:
        return v * 1.0
    out = _COMPACTED.get(v)
    if out is None:
        out = float(f"{v:.5g}")
        if len(_COMPACTED) < _COMPACT_KEPT:
            _COMPACTED[v] = out
    return out


_COMPACT_KEPT = 4096
_COMPACTED: dict[float, float] = {}


class Encoder:
    """Spec: ``(name, kind)`` with kind ``log`` (log1p of a non-negative count or amount),
    ``ln`` (log of a positive ratio; 0 when not positive), ``lin`` (as is), ``flag`` (bool to
    0/1) or ``logit`` (a probability in log-odds)."""

    def __init__(self, version: str, spec: Sequence[tuple[str, str]]) -> None:
        self.version = version
        self.spec = tuple(spec)
        self.names = tuple(n for n, _ in spec)
        self._kinds = dict(spec)

    def encode(self, values: dict[str, Any]) -> dict[str, float]:
        out = {}
        for name, kind in self.spec:
            v = values.get(name)
            if v is None:
                out[name] = 0.0 if kind != "logit" else _LOGIT_HALF
                continue
            if kind == "log":
                out[name] = log1p(v) if v > 0 else 0.0
            elif kind == "flag":
                out[name] = 1.0 if v else 0.0
            elif kind == "ln":
                out[name] = log(v) if v > 0 else 0.0
            elif kind == "logit":
                p = 1e-4 if v < 1e-4 else 1 - 1e-4 if v > 1 - 1e-4 else v
                out[name] = log(p / (1 - p))
            else:
                out[name] = float(v) if isfinite(v) else 0.0
        return out

    def pack(self, x: dict[str, float]) -> list[float]:
        return [x[n] for n in self.names]

    def decode(self, packed: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.names, packed))

    def display(self, name: str, v: float | None) -> float | None:
        """The value in the unit of the feature (undoing the transform), for reasons."""
        if v is None:
            return None
        kind = self._kinds.get(name)
        if kind == "log":
            return round(math.expm1(v), 4)
        if kind == "ln":
            return round(math.exp(v), 4)
        if kind == "logit":
            return round(1.0 / (1.0 + math.exp(-v)), 4)
        return round(v, 4)
