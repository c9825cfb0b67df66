"""An in-process time-series recorder for the operator pictures.

A :class:`Recorder` keeps the last ``capacity`` samples of a few named series (wall-clock
time, sampled every few seconds by a worker timer), in fixed-size ring buffers: memory is
bounded whatever the uptime. Values are plain floats or ``None`` (a gap in the picture).
Series appear when first recorded; a series that was not recorded in a sample gets ``None``
there, so every series is aligned with the sample times.

Rates are computed here from monotonic totals (:meth:`Recorder.rate`): the first sample of
a total gives no rate, a total that went down (a restart) gives no rate either.

>>> r = Recorder(capacity=3)
>>> r.rate("events", 10.0, 100.0) is None     # the first total gives no rate
True
>>> r.rate("events", 12.0, 140.0)             # (140 - 100) / (12 - 10)
20.0
>>> r.record(10.0, {"events_total": 100.0})
>>> r.record(12.0, {"events_total": 140.0, "lag": 5})
>>> r.export()["series"]["lag"]
[None, 5.0]
>>> for t in (14.0, 16.0): r.record(t, {"lag": 1})
>>> r.export()["t"], r.export()["series"]["events_total"]
([12.0, 14.0, 16.0], [140.0, None, None])
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["Recorder"]


def _clean(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Recorder:
    """Ring buffers of aligned samples: ``t`` (epoch seconds) and one list per series."""

    def __init__(self, capacity: int = 720, interval: float = 5.0) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self.interval = interval
        self._t: deque[float] = deque(maxlen=capacity)
        self._series: dict[str, deque[float | None]] = {}
        self._totals: dict[str, tuple[float, float]] = {}   # name -> (t, total) of the last call

    def __len__(self) -> int:
        return len(self._t)

    def rate(self, name: str, t: float, total: float | None) -> float | None:
        """Per-second rate of a monotonic ``total`` since the previous call for ``name``."""
        if total is None:
            return None
        prev = self._totals.get(name)
        self._totals[name] = (t, float(total))
        if prev is None:
            return None
        t0, v0 = prev
        if t <= t0 or total < v0:
            return None
        return (float(total) - v0) / (t - t0)

    def record(self, t: float, values: Mapping[str, Any]) -> None:
        """Append one sample at wall time ``t`` (older samples fall off the end)."""
        n = len(self._t)
        self._t.append(float(t))
        for name, v in values.items():
            buf = self._series.get(name)
            if buf is None:
                buf = self._series[name] = deque([None] * n, maxlen=self.capacity)
            buf.append(_clean(v))
        for name, buf in self._series.items():
            if name not in values:
                buf.append(None)

    def last(self, name: str) -> float | None:
        buf = self._series.get(name)
        return buf[-1] if buf else None

    def export(self, since: float | None = None) -> dict[str, Any]:
        """``{"interval", "t": [...], "series": {name: [...]}}``, optionally only samples
        after ``since``; JSON-ready."""
        times = list(self._t)
        start = 0
        if since is not None:
            while start < len(times) and times[start] <= since:
                start += 1
        return {"interval": self.interval, "capacity": self.capacity, "t": times[start:],
                "series": {name: list(buf)[start:] for name, buf in sorted(self._series.items())}}
