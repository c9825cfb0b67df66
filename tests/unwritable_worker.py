"""A worker (``python -m tests.unwritable_worker worker``) whose changelog delivery fails
once, as a broker that stays unreachable past the producer's retries would make it: the
``RETENTION_TEST_FAIL_FLUSH``-th flush that writes states gets one of its changelog
records failed (a ``KafkaTimeoutError``), unless the file ``RETENTION_TEST_FAIL_MARKER``
exists; the marker is then created, so the restarted worker writes normally.

It prints ``FAILED-FLUSH partition=P records=N`` when it fails one, so the test can check
that the failure happened and on what."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from streams.changelog import TableWriter

_send = TableWriter.send
_calls = 0


async def _failing_send(self: TableWriter, partition: int, items: list) -> list:
    global _calls
    futures = await _send(self, partition, items)
    _calls += 1
    marker = Path(os.environ["RETENTION_TEST_FAIL_MARKER"])
    if _calls >= int(os.environ["RETENTION_TEST_FAIL_FLUSH"]) and not marker.exists():
        marker.write_text("failed once\n")
        from aiokafka.errors import KafkaTimeoutError

        failed: Any = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaTimeoutError("injected: changelog record not delivered"))
        futures[len(futures) // 2] = failed
        print(f"FAILED-FLUSH partition={partition} records={len(items)}", flush=True)
    return futures


if __name__ == "__main__":   # only in the worker process (pytest imports this module too)
    TableWriter.send = _failing_send  # type: ignore[method-assign]

    from streams.__main__ import main

    sys.exit(main())
