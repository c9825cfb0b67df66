"""A live status line for long command-line work (replay, produce, evaluation).

On a terminal the line is rewritten in place (``\\r``) at most ``every`` seconds, with the
count, the rate, and a bar and ETA when the total is known; when the output is not a
terminal (CI logs, pipes) it prints a plain line every ``log_every`` seconds instead, so logs
stay readable. :meth:`StatusLine.done` prints the final line.

>>> import io
>>> out = io.StringIO()
>>> with StatusLine("replay", total=200, out=out, tty=False, log_every=0) as bar:
...     for _ in range(200):
...         bar.advance()
>>> out.getvalue().splitlines()[-1].startswith("replay: 200/200 (100%)")
True
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["StatusLine"]


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class StatusLine:
    """``advance(n)`` as work is done, ``note(text)`` for a short suffix, ``done()`` at the end."""

    def __init__(self, label: str, total: int | None = None, unit: str = "events",
                 out: TextIO | None = None, tty: bool | None = None, every: float = 0.2,
                 log_every: float = 10.0, width: int = 24) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.out = out or sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.every = every if self.tty else log_every
        self.width = width
        self.count = 0
        self.suffix = ""
        self.started = time.monotonic()
        self._last = 0.0
        self._finished = False

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done()

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._emit(final=False)

    def note(self, text: str) -> None:
        self.suffix = text

    def line(self) -> str:
        dt = max(time.monotonic() - self.started, 1e-9)
        rate = self.count / dt
        if self.total:
            frac = min(self.count / self.total, 1.0)
            head = f"{self.label}: {self.count:,}/{self.total:,} ({frac:.0%})"
            if self.tty:
                fill = int(frac * self.width)
                head += " [" + "#" * fill + "." * (self.width - fill) + "]"
            left = (self.total - self.count) / rate if rate > 0 and frac < 1 else 0
            tail = f" {rate:,.0f} {self.unit}/s" + (f", eta {_eta(left)}" if frac < 1 else
                                                     f", {dt:.1f}s")
        else:
            head = f"{self.label}: {self.count:,} {self.unit}"
            tail = f" {rate:,.0f}/s, {dt:.1f}s"
        return head + tail + (f"  {self.suffix}" if self.suffix else "")

    def _emit(self, final: bool) -> None:
        text = self.line()
        if self.tty:
            self.out.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self) -> None:
        if not self._finished:
            self._finished = True
            self._emit(final=True)
