"""A worker (``python -m tests.faulty_worker worker``) whose engine fails half way through
chosen events, as a bug inside the engine would: an event whose ``event_id`` starts with
``boom-`` is applied in full (state, source position, session, scores) and *then* the
engine raises. The worker must dead-letter it and leave no trace of it in the state, while
keeping the changes of the other events of its batch.

It also prints, for every batch holding such an event, the batch size and how many events
of the same key come before and after it in the batch (``BOOM-BATCH ...``), so the test
can check that the failure happened in the middle of a batch.
"""

from __future__ import annotations

import sys
from typing import Any

from models.engine import Engine
from streams.agents import Topology

_process = Engine.process


def _failing_process(self: Engine, event: dict, *args: Any, **kwargs: Any) -> list[dict]:
    out = _process(self, event, *args, **kwargs)
    if str(event.get("event_id", "")).startswith("boom-"):
        raise RuntimeError("injected engine failure after the state was changed")
    return out


_on_batch = Topology.on_batch


async def _logged_batch(self: Topology, events: Any) -> None:
    for i, ev in enumerate(events):
        msg = ev.message
        if msg.value and b'"boom-' in msg.value:
            same = [e.message.key == msg.key and e.message.partition == msg.partition
                    for e in events]
            print(f"BOOM-BATCH key={msg.key.decode()} offset={msg.offset} size={len(events)} "
                  f"same_key_before={sum(same[:i])} same_key_after={sum(same[i + 1:])}",
                  flush=True)
    await _on_batch(self, events)


if __name__ == "__main__":   # only in the worker process (pytest imports this module too)
    Engine.process = _failing_process  # type: ignore[method-assign]
    Topology.on_batch = _logged_batch  # type: ignore[method-assign]

    from streams.__main__ import main

    sys.exit(main())
