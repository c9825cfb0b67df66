"""The worker's garbage-collector settings (streams/gc_tuning.py). The worker processes'
freeze is checked over HTTP in tests/test_web_api.py (``retention_gc_frozen_objects``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streams.gc_tuning import DEFAULT_THRESHOLDS, parse_thresholds
from streams.settings import Settings


@pytest.mark.parametrize("text, expected", [
    (None, DEFAULT_THRESHOLDS), ("", DEFAULT_THRESHOLDS), ("700,10,10", (700, 10, 10)),
    (" 5000, 0, 3 ", (5000, 0, 3)), ("off", None), ("None", None)])
def test_parse_thresholds(text: str | None, expected: tuple | None) -> None:
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize("text", ["0,10,10", "1,2", "1,2,3,4", "a,b,c", "100,-1,10"])
def test_bad_thresholds_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_thresholds(text)


def test_settings_read_the_thresholds() -> None:
    assert Settings.from_env({}).gc_thresholds == DEFAULT_THRESHOLDS
    assert Settings.from_env({"RETENTION_GC_THRESHOLDS": "off"}).gc_thresholds is None
    assert Settings.from_env({"RETENTION_GC_THRESHOLDS": "900,5,5"}).gc_thresholds == (900, 5, 5)


def test_create_app_sets_the_thresholds_and_freeze_runs_once() -> None:
    """In a process of its own: the thresholds and the freeze are process wide."""
    code = textwrap.dedent("""
        import gc
        from streams.app import create_app
        from streams.gc_tuning import freeze_startup
        from streams.settings import Settings

        create_app(Settings.from_env({"RETENTION_GC_THRESHOLDS": "12345,6,7"}),
                   register=lambda app, s: None)
        assert gc.get_threshold() == (12345, 6, 7), gc.get_threshold()
        assert gc.get_freeze_count() == 0
        assert freeze_startup() is True
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen
        assert freeze_startup() is False and gc.get_freeze_count() == frozen
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


def test_off_leaves_the_collector_alone() -> None:
    code = textwrap.dedent("""
        import gc
        before = gc.get_threshold()
        from streams.app import create_app
        from streams.settings import Settings

        create_app(Settings.from_env({"RETENTION_GC_THRESHOLDS": "off"}),
                   register=lambda app, s: None)
        assert gc.get_threshold() == before, (gc.get_threshold(), before)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
