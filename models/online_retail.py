"""Converter of the real Online Retail 2009-2011 data set to order events.

Source: ``../shared/data/online-retail/`` (see its README): ``invoices.csv.gz`` (one row per
identified customer's invoice) and ``lines.csv.gz`` (every invoice line, guests included).
The directory defaults to ``<repo>/../shared/data/online-retail`` and can be overridden with
the environment variable ``RETENTION_ONLINE_RETAIL_DIR`` or the ``directory`` argument.

Mapping (the data has no clickstream, no list prices and no cart):

* purchase invoice of an identified customer -> ``order_completed``: ``order_id`` = invoice,
  ``currency`` GBP, ``total`` = ``subtotal`` = the invoice amount (sum of quantity x unit price,
  rounded to cents), ``discount`` / ``shipping`` / ``tax`` 0 (postage, when charged, is a line
  with product ``POST``), one line per (stock code, unit price) with the quantities summed and
  no ``list_price``: the data has none, so an order is neither full price nor discounted for the
  engine (``models.profile.is_discounted`` reports the price as unknown); discount behaviour
  cannot be studied on this data.
* cancellation invoice -> ``order_cancelled`` with ``refund_amount`` = |amount| and its lines.
  UCI cancellation numbers are ``"C"`` + a number of their own: none of the 4,247 of them
  matches a purchase invoice (checked), so no cancellation references the order it cancels and
  ``order_id`` is the cancellation's own id (``C489449``, or the made-up ``C?<customer>@<yyyymmddHHMM>``
  of the 2010-2011 cancellations that have no number). ``reason``: ``cancelled``, or
  ``discount`` / ``adjustment`` when every line is a discount (``D``) / manual or fee line.
  Lines of the number-less cancellations carry no stock code: the product id is taken from the
  description (the stock code most often sold under it), else ``"?" + description``.
* guest purchases (no customer id) are skipped and counted.
* times: ``invoice_datetime`` is UK local time, converted from Europe/London to UTC with
  zoneinfo (GMT in winter, BST = UTC+1 in summer). An ambiguous time (the repeated hour of the
  last Sunday of October) is read as the first (BST) one and a nonexistent one (the skipped hour
  of the last Sunday of March) as GMT; the data has no invoice in either hour.
* ``event_id`` = ``"or-" + invoice`` (deterministic), ``sent_at`` = ``occurred_at``, no
  ``session_id``, ``context`` = ``{"country": ...}``. Events are sorted by ``occurred_at``, ties
  by invoice id (a purchase before a cancellation of the same minute).

``with_lines=False`` reads only ``invoices.csv.gz`` (fast) and writes one summary line per
invoice: ``{"product_id": "*", "quantity": max(1, |items|), "price": |amount| / quantity}``.

pandas is imported inside the functions, so ``import models`` stays light.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .clock import format_time

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LONDON", "default_dir", "iter_order_events", "load_invoices", "load_lines",
           "london_to_epoch", "convert", "main"]

ENV_VAR = "RETENTION_ONLINE_RETAIL_DIR"
LONDON = ZoneInfo("Europe/London")
EVENT_PREFIX = "or-"
# stock codes that are not goods: discount, manual entries, fees, postage corrections
_DISCOUNT_CODES = frozenset({"D"})
_ADJUST_CODES = frozenset({"M", "ADJUST", "ADJUST2", "BANK CHARGES", "AMAZONFEE", "CRUK", "B",
                           "S", "DOT", "C2", "POST", "PADS", "TEST001", "TEST002"})


def default_dir() -> Path:
    """``$RETENTION_ONLINE_RETAIL_DIR``, else ``<repo>/../shared/data/online-retail``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "online-retail"


def _dir(directory: str | Path | None) -> Path:
    d = Path(directory) if directory is not None else default_dir()
    if not (d / "invoices.csv.gz").exists():
        raise FileNotFoundError(f"no invoices.csv.gz in {d} (set {ENV_VAR} or pass the directory)")
    return d


def london_to_epoch(local: str) -> float:
    """UK local wall time ``YYYY-MM-DD HH:MM[:SS]`` -> epoch seconds (UTC).

    >>> format_time(london_to_epoch("2011-01-10 09:30:00"))   # GMT
    '2011-01-10T09:30:00Z'
    >>> format_time(london_to_epoch("2011-07-10 09:30:00"))   # BST = UTC+1
    '2011-07-10T08:30:00Z'
    """
    return datetime.fromisoformat(local).replace(tzinfo=LONDON).timestamp()


def _epochs(values: Any) -> Any:
    """Vector of local time strings -> numpy array of epoch seconds (each distinct value once)."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    conv = [london_to_epoch(v) for v in uniques]
    import numpy as np

    return np.asarray(conv, dtype="float64")[codes]


def load_invoices(directory: str | Path | None = None) -> pd.DataFrame:
    """``invoices.csv.gz`` as a DataFrame sorted by (``occurred_at``, ``invoice``).

    Columns: ``customer_id`` (str), ``invoice`` (str), ``invoice_datetime`` (UK local, str),
    ``amount`` (float, negative for cancellations), ``n_lines``, ``items``, ``is_cancellation``
    (bool), ``country``, plus ``occurred_at`` (epoch seconds UTC).
    """
    import pandas as pd

    d = _dir(directory)
    df = pd.read_csv(d / "invoices.csv.gz",
                     dtype={"customer_id": str, "invoice": str, "invoice_datetime": str,
                            "amount": "float64", "n_lines": "int64", "items": "int64",
                            "is_cancellation": bool, "country": str},
                     keep_default_na=False)
    df["occurred_at"] = _epochs(df["invoice_datetime"])
    df = df.sort_values(["occurred_at", "invoice"], kind="stable").reset_index(drop=True)
    return df


def load_lines(directory: str | Path | None = None, identified_only: bool = True
               ) -> pd.DataFrame:
    """``lines.csv.gz`` with the invoice id completed and a ``product_id`` column.

    Lines of cancellations without an invoice number get the made-up id of ``invoices.csv.gz``
    (``C?<customer>@<yyyymmddHHMM>``). ``product_id`` is the stock code, or for lines without
    one the stock code most sold under the same description, else ``"?" + description``.
    ``identified_only`` drops guest lines (no customer id).
    """
    import pandas as pd

    d = _dir(directory)
    df = pd.read_csv(d / "lines.csv.gz",
                     dtype={"invoice": str, "stock_code": str, "description": str,
                            "quantity": "int64", "invoice_datetime": str,
                            "unit_price": "float64", "customer_id": str, "country": str})
    if identified_only:
        df = df[df["customer_id"].notna()].copy()
    missing = df["invoice"].isna() & df["customer_id"].notna()
    if missing.any():
        stamp = df.loc[missing, "invoice_datetime"].str.replace(r"[^0-9]", "", regex=True).str[:12]
        df.loc[missing, "invoice"] = "C?" + df.loc[missing, "customer_id"] + "@" + stamp
    desc = df["description"].fillna("").str.strip()
    pid = df["stock_code"]
    no_code = pid.isna()
    if no_code.any():
        known = pd.DataFrame({"d": desc[~no_code], "s": pid[~no_code]})
        best = (known.groupby(["d", "s"]).size().reset_index(name="n")
                .sort_values(["d", "n", "s"], ascending=[True, False, True])
                .drop_duplicates("d").set_index("d")["s"])
        filled = desc[no_code].map(best)
        fallback = "?" + desc[no_code].str.slice(0, 120)
        pid = pid.copy()
        pid[no_code] = filled.fillna(fallback)
    df["product_id"] = pid
    return df


def _reason(codes: set[str]) -> str:
    if codes and codes <= _DISCOUNT_CODES:
        return "discount"
    if codes and codes <= (_ADJUST_CODES | _DISCOUNT_CODES):
        return "adjustment"
    return "cancelled"


def _line_index(directory: str | Path | None, summary: dict[str, Any]
                ) -> dict[str, list[tuple[str, int, float]]]:
    """invoice -> [(product_id, summed signed quantity, unit price)] in first-seen order."""
    df = load_lines(directory, identified_only=False)
    guest = df["customer_id"].isna()
    ginv = df.loc[guest, "invoice"]
    summary["guest_lines_skipped"] = int(guest.sum())
    summary["guest_purchases_skipped"] = int(ginv[ginv.notna() & ~ginv.fillna("").str.startswith(("C", "A"))].nunique())
    summary["guest_cancellations_skipped"] = int(ginv[ginv.fillna("").str.startswith("C")].nunique())
    summary["guest_cancellation_lines_without_invoice"] = int((guest & df["invoice"].isna()).sum())
    df = df[~guest]
    agg = (df.groupby(["invoice", "product_id", "unit_price"], sort=False)["quantity"].sum()
           .reset_index())
    index: dict[str, list[tuple[str, int, float]]] = {}
    for inv, pid, price, qty in zip(agg["invoice"].tolist(), agg["product_id"].tolist(),
                                    agg["unit_price"].tolist(), agg["quantity"].tolist()):
        lst = index.get(inv)
        if lst is None:
            index[inv] = lst = []
        lst.append((pid, qty, price))
    return index


def iter_order_events(directory: str | Path | None = None, with_lines: bool = True,
                      summary: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``order_completed`` / ``order_cancelled`` events sorted by ``occurred_at``.

    ``summary`` (a dict, optional) is filled with counts: purchases, cancellations, customers,
    revenue, refunds, lines, and (``with_lines`` only) the guest rows skipped.
    """
    s = summary if summary is not None else {}
    inv = load_invoices(directory)
    lines = _line_index(directory, s) if with_lines else None
    s.update({"purchases": 0, "cancellations": 0, "lines": 0, "revenue": 0.0, "refunds": 0.0,
              "customers": int(inv["customer_id"].nunique()), "invoices_without_lines": 0})
    if not with_lines:
        s["guest_purchases_skipped"] = None      # invoices.csv.gz holds identified customers only
    cols = [inv[c].tolist() for c in ("customer_id", "invoice", "amount", "items",
                                      "is_cancellation", "country", "occurred_at")]
    fmt_cache: dict[float, str] = {}
    for cust, invoice, amount, items, cancel, country, t in zip(*cols):
        ts = fmt_cache.get(t)
        if ts is None:
            ts = fmt_cache[t] = format_time(t)
        total = round(abs(amount), 2)
        ev: dict[str, Any] = {"event_id": EVENT_PREFIX + invoice,
                              "type": "order_cancelled" if cancel else "order_completed",
                              "occurred_at": ts, "sent_at": ts, "customer_id": cust,
                              "schema_version": "1", "context": {"country": country},
                              "order_id": invoice}
        out_lines: list[dict[str, Any]] = []
        codes: set[str] = set()
        if lines is not None:
            for pid, qty, price in lines.get(invoice, ()):
                q = -qty if cancel else qty
                if q < 1:
                    continue
                codes.add(pid)
                p = round(price, 2)
                if cancel:
                    out_lines.append({"product_id": pid, "quantity": q, "price": p,
                                      "amount": round(q * price, 2)})
                else:
                    out_lines.append({"product_id": pid, "quantity": q, "price": p,
                                      "discount": 0.0})
            if not out_lines:
                s["invoices_without_lines"] += 1
        if not out_lines:
            q = max(1, abs(int(items)))
            p = round(total / q, 2)
            out_lines = [{"product_id": "*", "quantity": q, "price": p,
                          **({"amount": total} if cancel else {"discount": 0.0})}]
        s["lines"] += len(out_lines)
        if cancel:
            s["cancellations"] += 1
            s["refunds"] += total
            ev.update({"refund_amount": total, "currency": "GBP",
                       "reason": _reason(codes) if lines is not None else "cancelled",
                       "lines": out_lines})
        else:
            s["purchases"] += 1
            s["revenue"] += total
            ev.update({"currency": "GBP", "subtotal": total, "discount": 0.0, "shipping": 0.0,
                       "tax": 0.0, "total": total, "lines": out_lines})
        yield ev
    s["revenue"] = round(s["revenue"], 2)
    s["refunds"] = round(s["refunds"], 2)


def convert(out: str | Path, directory: str | Path | None = None, with_lines: bool = True
            ) -> dict[str, Any]:
    """Write the events as JSON lines (``-`` = stdout, ``.gz`` compressed); return the summary."""
    from .simulator import write_jsonl

    summary: dict[str, Any] = {}
    t0 = time.perf_counter()
    n = write_jsonl(iter_order_events(directory, with_lines, summary), out)
    summary["events"] = n
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.online_retail",
                                 description="Online Retail 2009-2011 -> order events (JSONL).")
    ap.add_argument("--out", required=True, help="JSONL file (.gz ok), - for stdout")
    ap.add_argument("--dir", default=None, help=f"data directory (default: ${ENV_VAR} or "
                                                "<repo>/../shared/data/online-retail)")
    ap.add_argument("--no-lines", action="store_true",
                    help="read invoices.csv.gz only; one summary line per order")
    a = ap.parse_args(argv)
    summary = convert(a.out, a.dir, with_lines=not a.no_lines)
    for k, v in summary.items():
        print(f"{k}: {v}", file=sys.stderr if a.out == "-" else sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
