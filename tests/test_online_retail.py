"""The Online Retail converter: one event per identified invoice, totals equal to the invoice
amounts, UK local time converted to UTC across daylight saving, deterministic ids and order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from models import online_retail as orr
from models.clock import format_time, parse_time

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (orr.default_dir() / "invoices.csv.gz").exists(),
                                reason="Online Retail data not available")


@pytest.fixture(scope="module")
def invoices():
    return orr.load_invoices()


@pytest.fixture(scope="module")
def converted():
    summary: dict = {}
    events = list(orr.iter_order_events(with_lines=True, summary=summary))
    return events, summary


@pytest.fixture(scope="module")
def quick():
    summary: dict = {}
    events = list(orr.iter_order_events(with_lines=False, summary=summary))
    return events, summary


def test_default_dir_is_the_repos_sibling_shared_data_and_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv(orr.ENV_VAR, raising=False)
    assert orr.default_dir() == ROOT.parent / "shared" / "data" / "online-retail"
    monkeypatch.setenv(orr.ENV_VAR, str(tmp_path))
    assert orr.default_dir() == tmp_path
    with pytest.raises(FileNotFoundError):
        orr.load_invoices()


@pytest.mark.parametrize("mode", ["converted", "quick"])
def test_one_event_per_identified_invoice(request, mode, invoices):
    events, summary = request.getfixturevalue(mode)
    purchases = int((~invoices["is_cancellation"]).sum())
    cancellations = int(invoices["is_cancellation"].sum())
    assert (purchases, cancellations) == (36_975, 7_897)          # README figures
    kinds = [e["type"] for e in events]
    assert kinds.count("order_completed") == purchases == summary["purchases"]
    assert kinds.count("order_cancelled") == cancellations == summary["cancellations"]
    assert len(events) == len(invoices)
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["order_id"] for e in events} == set(invoices["invoice"])
    assert all(e["event_id"] == "or-" + e["order_id"] for e in events)
    assert all(e["customer_id"] for e in events)
    assert len({e["customer_id"] for e in events}) == summary["customers"] == 5_942


@pytest.mark.parametrize("mode", ["converted", "quick"])
def test_totals_match_the_invoice_amounts(request, mode, invoices):
    events, _ = request.getfixturevalue(mode)
    amount = dict(zip(invoices["invoice"], invoices["amount"]))
    for e in events:
        a = amount[e["order_id"]]
        if e["type"] == "order_completed":
            assert a >= 0
            assert abs(e["total"] - a) < 1e-6
            assert e["subtotal"] == e["total"]
            assert e["discount"] == e["shipping"] == e["tax"] == 0
            assert e["currency"] == "GBP" and e["lines"]
        else:
            assert a <= 0
            assert abs(e["refund_amount"] + a) < 1e-6
            assert e["order_id"].startswith("C") and e["reason"]


def test_lines_come_from_lines_csv(converted, invoices):
    events, summary = converted
    items = dict(zip(invoices["invoice"], invoices["items"]))
    assert summary["invoices_without_lines"] == 0
    for e in events:
        lines = e["lines"]
        assert lines and all(ln["product_id"] != "*" for ln in lines)
        assert all(isinstance(ln["quantity"], int) and ln["quantity"] >= 1 for ln in lines)
        assert sum(ln["quantity"] for ln in lines) == abs(items[e["order_id"]])
        value = sum(ln["quantity"] * ln["price"] for ln in lines)
        total = e["total"] if e["type"] == "order_completed" else e["refund_amount"]
        assert abs(value - total) <= 0.01 + 0.005 * len(lines), e["order_id"]
        for ln in lines:
            assert ln["price"] >= 0
            if e["type"] == "order_completed":
                assert "list_price" not in ln and ln["discount"] == 0
            else:
                assert ln["amount"] >= 0
    first = events[0]
    assert first["order_id"] == "489434" and len(first["lines"]) == 8
    # the 2010-2011 cancellations have no invoice number: made-up id, lines found by customer+time
    madeup = next(e for e in events if e["order_id"] == "C?14527@201012010941")
    assert madeup["refund_amount"] == 27.5 and madeup["reason"] == "discount"
    assert madeup["lines"] == [{"product_id": "D", "quantity": 1, "price": 27.5, "amount": 27.5}]


def test_quick_mode_writes_one_summary_line(quick, invoices):
    events, summary = quick
    items = dict(zip(invoices["invoice"], invoices["items"]))
    assert summary["lines"] == len(events)
    for e in events:
        (ln,) = e["lines"]
        assert ln["product_id"] == "*" and ln["quantity"] == max(1, abs(items[e["order_id"]]))


def test_guest_purchases_are_skipped_and_counted(converted):
    _, summary = converted
    assert summary["guest_purchases_skipped"] > 5_000
    assert summary["guest_lines_skipped"] > 200_000


def test_uk_local_time_is_converted_to_utc_across_daylight_saving(converted):
    events, _ = converted
    at = {e["order_id"]: e["occurred_at"] for e in events}
    assert at["489434"] == "2009-12-01T07:45:00Z"            # winter: GMT = UTC
    assert at["558638"] == "2011-07-01T07:16:00Z"            # summer: 08:16 BST
    assert at["502669"] == "2010-03-26T08:51:00Z"            # Friday before the switch: GMT
    assert at["502811"] == "2010-03-28T09:13:00Z"            # switch day (01:00 GMT), 10:13 BST
    assert at["C?14527@201012010941"] == "2010-12-01T09:41:00Z"
    for e in events:
        assert e["occurred_at"].endswith("Z") and e["sent_at"] == e["occurred_at"]
    # the transition hours themselves (none in the data)
    assert format_time(orr.london_to_epoch("2011-03-27 00:59:00")) == "2011-03-27T00:59:00Z"
    assert format_time(orr.london_to_epoch("2011-03-27 02:00:00")) == "2011-03-27T01:00:00Z"
    assert format_time(orr.london_to_epoch("2011-10-30 01:30:00")) == "2011-10-30T00:30:00Z"
    assert format_time(orr.london_to_epoch("2011-10-30 02:00:00")) == "2011-10-30T02:00:00Z"


def test_sorted_by_time_then_invoice(converted):
    events, _ = converted
    keys = [(parse_time(e["occurred_at"]), e["order_id"]) for e in events]
    assert keys == sorted(keys)


def test_events_validate_against_the_contract(converted, quick):
    contract = pytest.importorskip("models.contract")
    for events in (converted[0], quick[0]):
        for e in events:
            contract.validate(orjson.loads(orjson.dumps(e)))


def test_cli_prints_counts(tmp_path):
    out = tmp_path / "retail.jsonl"
    res = subprocess.run([sys.executable, "-m", "models.online_retail", "--out", str(out),
                          "--no-lines"], cwd=ROOT, check=True, capture_output=True, text=True)
    assert "purchases: 36975" in res.stdout and "cancellations: 7897" in res.stdout
    lines = out.read_bytes().splitlines()
    assert len(lines) == 44_872
    assert orjson.loads(lines[0])["event_id"] == "or-489434"


def test_import_models_does_not_import_pandas():
    code = ("import sys, models, models.online_retail, models.simulator; "
            "print('pandas' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    assert res.stdout.strip() == "False"
