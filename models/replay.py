"""Offline replay: run the engine over a JSONL file of events, write the changes as JSONL.

Every line goes through the same contract as the streaming ingest (``models.contract``):
a bad line is counted with its reason and skipped, never silently. Events are split over
``--partitions`` engines with Kafka's default partitioner, so a replay reproduces what the
streaming workers compute; the output is deterministic to the byte.

    python -m models.replay events.jsonl --out changes.jsonl
    python -m models.replay events.jsonl --out changes.jsonl --partitions 4 --until 2026-01-01T00:00:00Z

The summary (events by type, rejected with reasons, changes by segment, store metrics) is
printed as JSON on standard error, or written with ``--summary FILE``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson

from .clock import parse_time
from .config import EngineConfig
from .contract import ContractError, event_key, parse_event
from .engine import Engine, ProcessingError
from .partitioning import partition_for
from .segments import Catalog, load_catalog

__all__ = ["Replay", "main", "read_lines"]


def read_lines(path: str | Path) -> Iterator[bytes]:
    """Lines of a JSONL file (``-`` for standard input), gzip if it ends in ``.gz``."""
    if str(path) == "-":
        yield from (line.rstrip(b"\r\n") for line in sys.stdin.buffer)
        return
    if str(path).endswith(".gz"):
        import gzip
        opener: Callable[..., Any] = gzip.open
    else:
        opener = open
    with opener(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


class Replay:
    """Engines for ``partitions`` partitions and the counts of one replay."""

    def __init__(self, config: EngineConfig | None = None, catalog: Catalog | None = None,
                 partitions: int = 1, scorer_factory: Callable[[], Any] | None = None) -> None:
        self.catalog = catalog or load_catalog()
        scorer = scorer_factory() if scorer_factory else None   # one learner per model, shared
        self.engines = [Engine(config, self.catalog, scorer=scorer) for _ in range(partitions)]
        self.partitions = partitions
        self.lines = 0
        self.rejected: Counter[str] = Counter()
        self.changes: Counter[str] = Counter()

    def engine_for(self, key: str) -> Engine:
        if self.partitions == 1:
            return self.engines[0]
        return self.engines[partition_for(key, self.partitions)]

    def feed(self, raw: bytes) -> list[dict]:
        self.lines += 1
        try:
            event = parse_event(raw)
            engine = self.engine_for(event_key(event))
            out: list[dict] = []
            visitor = None
            anon = engine.needs_visitor(event)
            if anon is not None:   # the visitor lives on another partition: hand it over first
                out, visitor = self.engine_for(anon).export_visitor(anon, event)
            target = engine.redirect_of(event)
            if target is not None:  # a linked visitor's event, its customer on another partition
                out += self.engine_for(target).process(event, as_key=target)
            else:
                out += engine.process(event, visitor=visitor)
        except ContractError as exc:
            self.rejected[f"{exc.stage}: {exc.path or '-'}: {_generic(exc.reason)}"] += 1
            return []
        except ProcessingError as exc:
            self.rejected[f"processing: {exc}"] += 1
            return []
        self._count(out)
        return out

    def finish(self, until: float | None) -> list[dict]:
        """Fire timers up to ``until`` (event time) on every partition."""
        out: list[dict] = []
        if until is not None:
            for engine in self.engines:
                out += engine.advance(until)
        self._count(out)
        return out

    def _count(self, out: list[dict]) -> None:
        for c in out:
            self.changes[f"{c['segment'] or c['type']}:{c['change']}"] += 1

    def summary(self) -> dict[str, Any]:
        by_type: Counter[str] = Counter()
        other: Counter[str] = Counter()
        metrics = None
        for engine in self.engines:
            for k, v in engine.counters.items():
                if k.startswith("type:"):
                    by_type[k[5:]] += v
                elif ":" not in k:
                    other[k] += v
            metrics = engine.metrics if metrics is None else metrics.merge(engine.metrics)
        sizes: Counter[str] = Counter()
        customers = 0
        for engine in self.engines:
            for state in engine.store.values():
                if state.retired:
                    continue
                customers += 1
                sizes.update(state.segments.keys())
        return {
            "lines": self.lines,
            "events_by_type": dict(sorted(by_type.items())),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected.most_common()),
            "counters": dict(sorted(other.items())),
            "changes_by_segment": dict(sorted(self.changes.items())),
            "keys": customers,
            "segment_sizes": dict(sorted(sizes.items())),
            "store": metrics.summary() if metrics else {},
            "definition_version": self.catalog.definition_version,
        }


def _generic(reason: str) -> str:
    """A reason without the offending value, so rejects group by rule."""
    return reason.split(", got ")[0]


def run(lines: Iterable[bytes], replay: Replay, out, until: float | None = None,
        progress: Callable[[int], None] | None = None) -> None:
    for raw in lines:
        for c in replay.feed(raw):
            out.write(orjson.dumps(c, option=orjson.OPT_SORT_KEYS) + b"\n")
        if progress is not None and replay.lines % 10000 == 0:
            progress(replay.lines)
    for c in replay.finish(until):
        out.write(orjson.dumps(c, option=orjson.OPT_SORT_KEYS) + b"\n")


def _rates(values: list[str]) -> dict[str, float]:
    rates = {}
    for v in values:
        cur, _, rate = v.partition("=")
        rates[cur.strip().upper()] = float(rate)
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("events", help="JSONL file of events (.gz ok, - for stdin)")
    p.add_argument("--out", default="-", help="where to write the changes (JSONL; default stdout)")
    p.add_argument("--definitions", help="segment definitions TOML (default: built-in catalogue)")
    p.add_argument("--partitions", type=int, default=1, help="engines, split like Kafka (default 1)")
    p.add_argument("--until", help="fire timers up to this ISO time at the end")
    p.add_argument("--rate", action="append", default=[], metavar="CUR=RATE",
                   help="conversion rate into the store currency, e.g. USD=0.8 (repeatable)")
    p.add_argument("--store-currency", default="GBP")
    p.add_argument("--models", action="store_true", help="score with the online models (models.scoring)")
    p.add_argument("--summary", help="write the summary JSON here instead of stderr")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    args = p.parse_args(argv)
    try:
        catalog = load_catalog(args.definitions) if args.definitions else load_catalog()
        config = EngineConfig(store_currency=args.store_currency, currency_rates=_rates(args.rate))
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scorer_factory = None
    if args.models:
        from .scoring import ModelHub
        scorer_factory = ModelHub
    replay = Replay(config, catalog, args.partitions, scorer_factory)
    started = time.perf_counter()

    def progress(n: int) -> None:
        if not args.quiet and sys.stderr.isatty():
            rate = n / max(time.perf_counter() - started, 1e-9)
            print(f"\r{n:,} events  {rate:,.0f}/s  {sum(replay.changes.values()):,} changes",
                  end="", file=sys.stderr, flush=True)

    try:
        lines = read_lines(args.events)
        if args.out == "-":
            run(lines, replay, sys.stdout.buffer, until, progress)
        else:
            with open(args.out, "wb") as fh:
                run(lines, replay, fh, until, progress)
    except FileNotFoundError as exc:
        print(f"error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    summary = orjson.dumps(replay.summary(), option=orjson.OPT_INDENT_2)
    if args.summary:
        Path(args.summary).write_bytes(summary + b"\n")
    else:
        sys.stderr.write(summary.decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
