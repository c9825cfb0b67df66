"""Event time: parsing, formatting and the per-partition event-time clock.

Inside the domain a point in time is a ``float`` of epoch seconds (UTC). On the wire
it is ISO-8601 with a zone. Wall-clock time is never read here, so that a replay of the
same events gives the same outputs as the live run.

>>> t = parse_time("2024-03-31T01:30:00+01:00")
>>> format_time(t)
'2024-03-31T00:30:00Z'
>>> clock = EventClock(allowed_lateness=60.0)
>>> clock.observe(1000.0)
'on_time'
>>> clock.watermark
940.0
>>> clock.observe(930.0)
'late'
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from functools import lru_cache

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

__all__ = ["DAY", "HOUR", "MINUTE", "EventClock", "format_time", "parse_time"]


class TimeError(ValueError):
    """A timestamp that is not ISO-8601 with an explicit zone."""


@lru_cache(maxsize=65536)
def parse_time(value: str) -> float:
    """Parse an ISO-8601 timestamp *with zone* to epoch seconds.

    >>> parse_time("1970-01-01T00:01:00Z")
    60.0
    >>> parse_time("2024-01-01T00:00:00")
    Traceback (most recent call last):
    ...
    models.clock.TimeError: timestamp without zone: '2024-01-01T00:00:00'
    """
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise TimeError(f"not an ISO-8601 timestamp: {value!r}") from exc
    if dt.tzinfo is None:
        raise TimeError(f"timestamp without zone: {value!r}")
    return dt.timestamp()


def format_time(t: float) -> str:
    """Format epoch seconds as ISO-8601 UTC with a ``Z`` suffix (milliseconds kept when set).

    >>> format_time(0.0)
    '1970-01-01T00:00:00Z'
    >>> format_time(1.5)
    '1970-01-01T00:00:01.500Z'
    """
    if not 0.0 <= t < _LAST:
        return _format_datetime(t)
    # what datetime.fromtimestamp does (microseconds rounded half to even), without building
    # a datetime: every segment change is stamped with this
    frac, whole = math.modf(t)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole += 1.0
        us -= 1_000_000
    day, sec = divmod(int(whole), 86400)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        prefix = _DAY_PREFIX[day] = _format_datetime(day * 86400.0)[:11]
    minute, second = divmod(sec, 60)
    return prefix + _HH_MM[minute] + _SS[second] + (_MILLIS[us // 1000] if us else "Z")


_LAST = 4102444800.0                  # 2100-01-01T00:00:00Z: later ones take the long way
_DAY_PREFIX: dict[int, str] = {}      # day number -> "YYYY-MM-DDT"
_HH_MM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SS = [f"{s:02d}" for s in range(60)]
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def _format_datetime(t: float) -> str:
    """:func:`format_time` by way of ``datetime`` (any time; the reference)."""
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class EventClock:
    """The event-time clock of one partition.

    ``max_seen`` is the largest event time observed; the *watermark* trails it by
    ``allowed_lateness``. Timers fire when the watermark passes their due time. An event
    older than the watermark is *late*: it is still applied to the customer it belongs to
    (counts and revenue stay right) but it cannot un-fire a timer that already fired.
    """

    __slots__ = ("allowed_lateness", "max_seen", "late_events")

    def __init__(self, allowed_lateness: float = 5 * MINUTE, max_seen: float | None = None,
                 late_events: int = 0) -> None:
        self.allowed_lateness = float(allowed_lateness)
        self.max_seen = max_seen
        self.late_events = late_events

    @property
    def watermark(self) -> float | None:
        if self.max_seen is None:
            return None
        return self.max_seen - self.allowed_lateness

    def observe(self, t: float) -> str:
        """Record an event time; return ``'on_time'`` or ``'late'``."""
        wm = self.watermark
        if self.max_seen is None or t > self.max_seen:
            self.max_seen = t
        if wm is not None and t < wm:
            self.late_events += 1
            return "late"
        return "on_time"

    def to_dict(self) -> dict:
        return {"allowed_lateness": self.allowed_lateness, "max_seen": self.max_seen,
                "late_events": self.late_events}

    @classmethod
    def from_dict(cls, d: dict) -> EventClock:
        return cls(d["allowed_lateness"], d.get("max_seen"), d.get("late_events", 0))
