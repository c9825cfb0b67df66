"""How good is the BG/NBD population fit in a shop's first weeks? (``bgnbd_min_history_days``)

The hub refits its population every 7 days of event time once its sample holds 50 customers
with an order (``models/scoring/population.py``). Without a minimum history, the first fits
come a few days after the first order, when hardly anyone has had time to come back. This
benchmark measures what those fits predict.

Orders are replayed in event-time order into two ``Population`` objects, as the hub feeds
them (``observe`` at each order, ``maybe_refit`` at each order's time):

- ``no minimum``: ``min_history_days = 0`` (the rule before 2026-12-07, evening);
- ``minimum``: the default ``HubConfig.bgnbd_min_history_days``.

At each cutoff (days after the first order), every customer with an order is scored with
BG/NBD's expected purchases in the next 365 days under each population's parameters and
under the prior (CDNOW's parameters, what serves before any fit), against the orders each
customer actually placed in those 365 days: RMSE (the error an expectation minimises), MAE,
and the mean predicted against the mean realised.

Sources: the shopper simulator (``--customers``, ``--seed``, cutoffs plus 365 days of events)
and the real Online Retail invoices (``../shared/data/online-retail/``; cancellations left
out, purchases only).

    python bench/early_population_fit.py [--source sim|retail|both] [--cutoffs 7,14,21,28,56,90]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.clock import DAY, parse_time  # noqa: E402
from models.scoring import HubConfig  # noqa: E402
from models.scoring.btyd import DEFAULT_BGNBD, BGNBDParams, expected_purchases_one  # noqa: E402
from models.scoring.population import Population  # noqa: E402

HORIZON = 365.0


def orders_of(source: str, customers: int, seed: int, days: float):
    """``(customer, time, total)`` of every completed order, in event-time order."""
    if source == "sim":
        from models.simulator import SimConfig, iter_events
        events = iter_events(SimConfig(n_customers=customers, days=days, seed=seed))
    else:
        from models.online_retail import iter_order_events
        events = iter_order_events(with_lines=False)
    out = [(ev["customer_id"], parse_time(ev["occurred_at"]), float(ev.get("total") or 0.0))
           for ev in events if ev["type"] == "order_completed" and ev.get("customer_id")]
    out.sort(key=lambda o: o[1])
    return out


def evaluate(orders, cutoffs: list[float], min_history: float) -> list[dict]:
    pops = {"no minimum": Population(min_history_days=0.0),
            "minimum": Population(min_history_days=min_history)}
    t0 = orders[0][1]
    history: dict[str, list] = {}          # customer -> [first, last, orders, total]
    rows, ci = [], 0
    # at each cutoff: (day, time, customer -> (first, last, orders), population -> BG/NBD)
    snapshots: list[tuple[float, float, dict, dict[str, BGNBDParams]]] = []
    for key, t, total in orders + [(None, math.inf, 0.0)]:
        while ci < len(cutoffs) and t >= t0 + cutoffs[ci] * DAY:
            at = t0 + cutoffs[ci] * DAY
            snapshots.append((cutoffs[ci], at,
                              {k: (h[0], h[1], h[2]) for k, h in history.items()},
                              {name: p.bgnbd for name, p in pops.items()}))
            ci += 1
        if key is None:
            break
        h = history.setdefault(key, [t, t, 0, 0.0])
        h[1], h[2], h[3] = t, h[2] + 1, h[3] + total
        for p in pops.values():
            p.observe(key, h[0], h[1], h[2], h[3] / h[2])
            p.maybe_refit(t)
    for day, at, seen, params in snapshots:
        keys = list(seen)
        count: dict[str, int] = dict.fromkeys(keys, 0)
        for key, t, _ in orders:
            if at < t <= at + HORIZON * DAY and key in count:
                count[key] += 1
        actual = [count[k] for k in keys]
        inputs = []
        for k in keys:
            first, last, n = seen[k]
            inputs.append((n - 1, (last - first) / DAY, (at - first) / DAY))
        row = {"day": day, "customers": len(keys),
               "realised": sum(actual) / max(len(keys), 1)}
        for name, p in (("prior", DEFAULT_BGNBD), ("no minimum", params["no minimum"]),
                        ("minimum", params["minimum"])):
            pred = [expected_purchases_one(p, x, tx, T, HORIZON) for x, tx, T in inputs]
            err = [a - b for a, b in zip(pred, actual)]
            row[name] = {"rmse": math.sqrt(sum(e * e for e in err) / len(err)),
                         "mae": sum(abs(e) for e in err) / len(err),
                         "predicted": sum(pred) / len(pred),
                         "is_prior": p == DEFAULT_BGNBD}
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=["sim", "retail", "both"], default="both")
    p.add_argument("--cutoffs", default="7,14,21,28,56,90")
    p.add_argument("--customers", type=int, default=3000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--min-history", type=float, default=HubConfig().bgnbd_min_history_days)
    args = p.parse_args()
    cutoffs = [float(c) for c in args.cutoffs.split(",")]
    sources = ["sim", "retail"] if args.source == "both" else [args.source]
    print(f"BG/NBD expected orders in the next {HORIZON:g} days against those placed; "
          f"minimum history {args.min_history:g} days")
    for source in sources:
        started = time.perf_counter()
        orders = orders_of(source, args.customers, args.seed, max(cutoffs) + HORIZON + 5)
        rows = evaluate(orders, cutoffs, args.min_history)
        name = (f"simulator, {args.customers} customers, seed {args.seed}" if source == "sim"
                else "Online Retail")
        print(f"\n{name}: {len(orders):,} orders ({time.perf_counter() - started:.0f} s)\n")
        print("| day | customers | realised | prior RMSE / MAE / predicted "
              "| no minimum | minimum |")
        print("|---:|---:|---:|---|---|---|")
        for r in rows:
            cells = []
            for k in ("prior", "no minimum", "minimum"):
                c = r[k]
                tag = " (prior)" if k != "prior" and c["is_prior"] else ""
                cells.append(f"{c['rmse']:.2f} / {c['mae']:.2f} / {c['predicted']:.2f}{tag}")
            print(f"| {r['day']:g} | {r['customers']:,} | {r['realised']:.2f} | "
                  + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
