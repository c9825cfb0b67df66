"""Online Retail (real invoices, 2009-2011): per-customer frequency, recency, tenure and
monetary value from the engine equal an independent pandas computation on the raw CSV,
for every customer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.clock import DAY, parse_time
from models.engine import Engine
from models.online_retail import default_dir, iter_order_events

pytestmark = pytest.mark.skipif(not (default_dir() / "invoices.csv.gz").exists(),
                                reason="../shared/data/online-retail is not present")

END = parse_time("2011-12-10T00:00:00Z")   # "now" for tenure (T) and recency


@pytest.fixture(scope="module")
def engine() -> Engine:
    eng = Engine()
    for ev in iter_order_events(with_lines=False):
        eng.process(ev)
    return eng


@pytest.fixture(scope="module")
def expected() -> pd.DataFrame:
    """The BTYD-style RFM summary at order granularity, straight from invoices.csv.gz."""
    inv = pd.read_csv(default_dir() / "invoices.csv.gz", dtype={"customer_id": str, "invoice": str})
    local = pd.to_datetime(inv["invoice_datetime"])
    utc = local.dt.tz_localize("Europe/London", ambiguous=True, nonexistent="shift_backward").dt.tz_convert("UTC")
    inv["t"] = (utc - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
    inv["amount"] = inv["amount"].abs().round(2)
    buys = inv[~inv["is_cancellation"]]
    cancels = inv[inv["is_cancellation"]]
    g = buys.groupby("customer_id")
    out = pd.DataFrame({
        "orders": g.size(),
        "first": g["t"].min(),
        "last": g["t"].max(),
        "gross": g["amount"].sum(),
    })
    out["refunded"] = cancels.groupby("customer_id")["amount"].sum().reindex(out.index).fillna(0.0)
    out["cancelled"] = cancels.groupby("customer_id").size().reindex(out.index).fillna(0).astype(int)
    out["frequency"] = out["orders"] - 1                      # repeat purchases
    out["recency_days"] = (out["last"] - out["first"]) / DAY   # first to last purchase
    out["T_days"] = (END - out["first"]) / DAY                 # age of the customer
    out["monetary"] = out["gross"] - out["refunded"]           # net value
    out.attrs["store_net_revenue"] = buys["amount"].sum() - cancels["amount"].sum()
    return out


def test_every_customer_matches_an_independent_groupby(engine, expected):
    assert len(expected) > 5000
    rows = []
    for cid in expected.index:
        s = engine.state_of(cid)
        f = engine.features_of(cid, END)
        rows.append((s.orders, s.cancelled_orders, f["orders"] - 1, f["days_since_first_order"] - f["days_since_last_order"],
                     f["days_since_first_order"], f["net_revenue"]))
    got = pd.DataFrame(rows, index=expected.index,
                       columns=["orders", "cancelled", "frequency", "recency_days", "T_days", "monetary"])
    assert (got["orders"] == expected["orders"]).all()
    assert (got["cancelled"] == expected["cancelled"]).all()
    assert (got["frequency"] == expected["frequency"]).all()
    np.testing.assert_allclose(got["recency_days"], expected["recency_days"], atol=1e-6)
    np.testing.assert_allclose(got["T_days"], expected["T_days"], atol=1e-6)
    np.testing.assert_allclose(got["monetary"], expected["monetary"], atol=1e-6)


def test_store_metrics_match(engine, expected):
    s = engine.metrics.summary()
    assert s["customers"] == len(expected)
    assert s["orders"] == int(expected["orders"].sum())
    assert s["repeat_purchase_rate"] == pytest.approx((expected["orders"] >= 2).mean())
    # the store's net revenue also counts cancellations of customers with no purchase here
    assert s["net_revenue"] == pytest.approx(expected.attrs["store_net_revenue"], rel=1e-9)
    print("\nOnline Retail store metrics:", {k: round(v, 3) if isinstance(v, float) else v for k, v in s.items()})
