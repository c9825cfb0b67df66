"""What-if: check a changed segment-definitions file against history before it goes live.

The new file is validated first (a bad file stops here with the reason). Then the same
events are replayed through the current and the new definitions side by side, and for each
segment it prints how many customers are members at the end under each, how many would
enter and leave (customers in the new membership and not the current one, and the reverse),
and how many change events each would have emitted.

    python -m models.whatif --definitions new.toml events.jsonl
    python -m models.whatif --definitions new.toml --current models/segments.toml retail.jsonl --until 2011-12-10T00:00:00Z
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, Iterable

from .clock import parse_time
from .config import EngineConfig
from .replay import Replay, _rates, read_lines
from .segments import Catalog, DefinitionError, load_catalog

__all__ = ["compare", "main"]


def _members(replay: Replay) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for engine in replay.engines:
        for key, state in engine.store.items():
            for seg in state.segments:
                out.setdefault(seg, set()).add(key)
    return out


def compare(lines: Iterable[bytes], current: Catalog, new: Catalog, config: EngineConfig | None = None,
            until: float | None = None, partitions: int = 1) -> dict[str, Any]:
    """Replay ``lines`` through both catalogues; return per-segment differences."""
    a = Replay(config, current, partitions)
    b = Replay(config, new, partitions)
    changes_a: Counter[str] = Counter()
    changes_b: Counter[str] = Counter()
    for raw in lines:
        for c in a.feed(raw):
            changes_a[c["segment"]] += 1
        for c in b.feed(raw):
            changes_b[c["segment"]] += 1
    for c in a.finish(until):
        changes_a[c["segment"]] += 1
    for c in b.finish(until):
        changes_b[c["segment"]] += 1
    ma, mb = _members(a), _members(b)
    rows = []
    for seg in sorted(set(current.segments) | set(new.segments)):
        now, then = ma.get(seg, set()), mb.get(seg, set())
        status = ("added" if seg not in current.segments else "removed" if seg not in new.segments
                  else "changed" if _text(current, seg) != _text(new, seg) else "same")
        rows.append({"segment": seg, "status": status, "members_current": len(now),
                     "members_new": len(then), "would_enter": len(then - now), "would_leave": len(now - then),
                     "changes_current": changes_a.get(seg, 0), "changes_new": changes_b.get(seg, 0)})
    return {"current_version": current.definition_version, "new_version": new.definition_version,
            "events": a.lines, "rejected": sum(a.rejected.values()), "segments": rows}


def _text(cat: Catalog, seg: str) -> tuple:
    d = cat.segments[seg]
    return (d.enter.text, d.exit.text, d.min_dwell, d.holdout_percent)


def render(result: dict[str, Any]) -> str:
    head = (f"current {result['current_version']}  ->  new {result['new_version']}   "
            f"({result['events']:,} events, {result['rejected']:,} rejected)\n")
    cols = ("segment", "status", "members_current", "members_new", "would_enter", "would_leave",
            "changes_current", "changes_new")
    titles = ("segment", "definition", "members now", "members new", "would enter", "would leave",
              "changes now", "changes new")
    widths = [max(len(t), *(len(str(r[c])) for r in result["segments"])) for c, t in zip(cols, titles)]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in result["segments"]:
        lines.append("  ".join(str(r[c]).ljust(w) if i < 2 else str(r[c]).rjust(w)
                               for i, (c, w) in enumerate(zip(cols, widths))))
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.whatif", description=__doc__.split("\n\n")[0])
    p.add_argument("events", help="JSONL file of past events (.gz ok)")
    p.add_argument("--definitions", required=True, help="the changed definitions file (TOML)")
    p.add_argument("--current", help="the definitions live now (default: RETENTION_SEGMENTS or built-in)")
    p.add_argument("--until", help="fire timers up to this ISO time at the end")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--rate", action="append", default=[], metavar="CUR=RATE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    try:
        new = load_catalog(args.definitions)
    except DefinitionError as exc:
        print(f"the new definitions are not valid, nothing was replayed:\n  {exc}", file=sys.stderr)
        return 2
    try:
        current = load_catalog(args.current) if args.current else load_catalog()
        until = parse_time(args.until) if args.until else None
        config = EngineConfig(currency_rates=_rates(args.rate))
        result = compare(read_lines(args.events), current, new, config, until, args.partitions)
    except (DefinitionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    if args.json:
        import orjson
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
