"""Where a benchmark consumer's threads spent their time, from a py-spy speedscope profile.

Profile the consumers of a benchmark (each one gets its own file)::

    pip install py-spy
    BENCH_PYSPY=/tmp/prof python bench/pipeline_throughput.py --events 40000 --runs 1 \\
        --kinds decode,pipeline
    python bench/profile_summary.py /tmp/prof/pipeline-0-0-*.speedscope.json \\
        --window Topology.on_batch

The main thread's figures are taken over its busy window: from the first to the last sample
whose stack holds ``--window`` (a function name: the agent body), so start-up and the idle
tail are left out. ``--idle`` samples are kept (py-spy ``--idle``): the share of
``EpollSelector.select`` is the time the event loop had nothing to run. Other threads are
summarised over the same span of wall time (same sampling rate).
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


#: prefixes cut from file names: the project's root, installed packages, the stdlib
_CUTS = (str(Path(__file__).resolve().parents[1]) + "/", "site-packages/", "python3.11/",
         "python3.12/")


def _label(frame: dict) -> str:
    path = frame.get("file", "")
    for cut in _CUTS:
        path = path.split(cut)[-1]
    return f"{frame['name']} ({path})"


def children(names: list[str], span: list[list[int]], under: str) -> collections.Counter[str]:
    """Samples of ``span`` per direct callee of the outermost frame named ``under`` (its own
    time as ``(self)``), so a function's cost splits into what it calls."""
    out: collections.Counter[str] = collections.Counter()
    for stack in span:
        for depth, f in enumerate(stack):
            if under in names[f]:
                out[names[stack[depth + 1]] if depth + 1 < len(stack) else "(self)"] += 1
                break
    return out


def summarise(path: Path, window: str, top: int, under: list[str] | None = None) -> None:
    doc = json.loads(path.read_text())
    names = [_label(f) for f in doc["shared"]["frames"]]
    profiles = doc["profiles"]
    # py-spy names the main thread "MainThread", or leaves the name empty when it could
    # not read it; it lists the main thread first
    main = next((p for p in profiles if p["name"].endswith('"MainThread"')), profiles[0])
    hits = [i for i, s in enumerate(main["samples"]) if any(window in names[f] for f in s)]
    if not hits:
        raise SystemExit(f"{path}: no sample of the main thread holds {window!r}")
    start, end = hits[0], hits[-1]
    print(f"{path.name}: busy window {end - start + 1} samples of the main thread")
    for prof in profiles:
        samples = prof["samples"]
        if prof is main:
            span = samples[start:end + 1]
        else:                                  # same rate: align the ends of the threads
            shift = len(main["samples"]) - len(samples)
            span = samples[max(0, start - shift):max(0, end + 1 - shift)]
        if not span or "publish" in prof["name"]:
            continue
        inclusive: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        for stack in span:
            inclusive.update({names[f] for f in stack})
            own[names[stack[-1]] if stack else "(none)"] += 1
        n = len(span)
        print(f"\n== {prof['name']}: {n} samples")
        print("-- inclusive")
        for name, count in inclusive.most_common(top):
            print(f"{100 * count / n:5.1f} {name}")
        print("-- own")
        for name, count in own.most_common(top // 2):
            print(f"{100 * count / n:5.1f} {name}")
        for fn in (under or []) if prof is main else []:
            split = children(names, span, fn)
            print(f"-- under {fn} ({100 * sum(split.values()) / n:.1f} %)")
            for name, count in split.most_common(top // 2):
                print(f"{100 * count / n:5.1f} {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--window", default="Topology.on_batch",
                   help="a function of the agent body (decode agent: 'register.<locals>.decode')")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--under", action="append", metavar="FUNC",
                   help="also split FUNC's time by its direct callees (repeatable), "
                        "e.g. --under Topology._on_event")
    args = p.parse_args()
    for path in args.profiles:
        summarise(path, args.window, args.top, args.under)


if __name__ == "__main__":
    main()
