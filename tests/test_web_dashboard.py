"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright).

One worker (``python -m streams.web.worker``: the topology, the operator views and a ModelHub)
runs on the embedded broker while simulated events trickle in for several seconds, with a
few bad messages among them, and the recorder samples every second. The page is opened in
chromium with the bearer token in the URL fragment; the test waits until the pictures are
drawn, looks a customer up through the search box, saves a screenshot in the test's tmp dir
(and as ``docs/img/dashboard.png`` when ``RETENTION_DOCS_SCREENSHOT=1``: a test run leaves the
work tree as it found it) and checks that every picture shows data: SVG paths with enough
points and non-zero values.

Skipped, with the reason, only when chromium is not installed (CI installs it:
``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import key_of, produce_raw, simulated_lines, worker_env

from streams.cli import create_all_topics
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                         else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKEN = "dash-token"

pytestmark = [
    pytest.mark.broker, pytest.mark.timeout(240),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: "
                       "apt-get install -y chromium); the dashboard test needs a real browser"),
]


def series(port: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/dashboard/series",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def trickle(bootstrap: str, topic: str, lines: list[bytes], chunks: int, pause: float,
            errors: list[BaseException]) -> None:
    """Send ``lines`` in ``chunks`` bursts ``pause`` seconds apart, a bad message in each."""
    try:
        step = len(lines) // chunks + 1
        for i in range(chunks):
            part = lines[i * step:(i + 1) * step]
            records = [(key_of(x), x) for x in part]
            records.append((b"c-bad", b'{"broken json'))
            produce_raw(bootstrap, topic, records)
            time.sleep(pause)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_dashboard_draws_the_pictures_in_chromium(broker: Any, workers: Any, unique: str,
                                                  tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    env = worker_env(broker.bootstrap, f"rsdash-{unique}", tmp_path / "w",
                     RETENTION_TOPIC_PREFIX=f"dash{unique}.", RETENTION_STORE="memory://",
                     RETENTION_CLOCK_INTERVAL="0", RETENTION_WEB_TOKEN=TOKEN,
                     RETENTION_WEB_SAMPLE_INTERVAL="1",
                         RETENTION_MODELS="1", RETENTION_MODEL_KEY="web-test-model-key")
    settings = Settings.from_env(env)
    create_all_topics(settings)
    w = workers("streams.web.worker", env, name="dash")
    w.wait_ready(90)
    port = env["RETENTION_WEB_PORT"]

    lines = simulated_lines(customers=150, days=150, seed=23)
    errors: list[BaseException] = []
    producer = threading.Thread(target=trickle, args=(broker.bootstrap,
                                                      settings.topic("shop.clickstream"),
                                                      lines, 8, 1.0, errors), daemon=True)
    producer.start()
    producer.join(120)
    assert not errors, errors
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:           # every event applied, a few samples after
        doc = series(port)
        rates = [v for v in doc["series"].get("events_per_s", []) if v]
        if len(rates) >= 4 and doc["series"]["events_per_s"][-1] == 0:
            break
        time.sleep(0.5)
    assert len(rates) >= 4, doc

    shot = tmp_path / "dashboard.png"
    customer = next(orjson.loads(x)["customer_id"] for x in lines
                    if orjson.loads(x)["type"] == "order_completed"
                    and orjson.loads(x).get("customer_id"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            external: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(f"http://127.0.0.1:{port}/")
                    else external.append(r.url))
            page.goto(f"http://127.0.0.1:{port}/dashboard#token={TOKEN}")
            page.wait_for_function(
                "() => ['chart-events','chart-segments','chart-logloss'].every(id =>"
                " +document.getElementById(id).getAttribute('data-points') > 3)",
                timeout=20_000)
            page.fill("#customer-id", customer)
            page.click("#search button")
            page.wait_for_selector("#customer h2", timeout=10_000)
            panel = page.inner_text("#customer")
            charts = page.evaluate("""() => Object.fromEntries(
                [...document.querySelectorAll('figure.chart')].map(f => [f.id,
                  [...f.querySelectorAll('path.series')].map(p => ({
                     name: p.getAttribute('data-name'),
                     points: +p.getAttribute('data-points'),
                     last: +p.getAttribute('data-last'),
                     d: p.getAttribute('d')}))]))""")
            tiles = page.inner_text("#tiles")
            rows = page.locator("#partitions tbody tr").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    if os.environ.get("RETENTION_DOCS_SCREENSHOT") == "1":    # refresh the docs' picture
        img = ROOT / "docs" / "img"
        img.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, img / "dashboard.png")

    assert not external, f"the dashboard fetched something outside the worker: {external}"
    assert not [c for c in console if c.startswith(("error", "pageerror"))], console
    assert f"Customer {customer}" in panel and "served by" in panel, panel
    assert rows == 4 and "–" not in tiles.split("\n")[1], tiles

    def ys(path: dict) -> list[float]:
        nums = path["d"].replace("M", " ").replace("L", " ").split()
        return [float(v) for v in nums[1::2]]

    events = charts["chart-events"]
    assert len(events) == 1 and events[0]["points"] >= 6, events
    assert len(set(ys(events[0]))) > 2, "the event rate is a flat line"
    full = series(port)
    assert max(v for v in full["series"]["events_per_s"] if v is not None) > 50
    assert max(v for v in full["series"]["dead_letters_per_s"] if v is not None) > 0
    assert charts["chart-dlq"] and charts["chart-dlq"][0]["points"] >= 6
    assert charts["chart-lag"] and charts["chart-lag"][0]["points"] >= 6
    segs = charts["chart-segments"]
    assert len(segs) >= 3 and max(s["last"] for s in segs) > 10, segs
    assert charts["chart-logloss"] and all(s["last"] > 0 for s in charts["chart-logloss"])
    auc = charts["chart-auc"]
    assert auc and all(0 < s["last"] <= 1 for s in auc), auc
    print(f"screenshot: {shot}; "
          f"{len(full['t'])} samples, event rate up to "
          f"{max(v for v in full['series']['events_per_s'] if v is not None):.0f}/s")
