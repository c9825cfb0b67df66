"""A delivery probe: the smallest Faust topology that shows lost or duplicated events.

Every record of ``probe.in`` is counted in a table (so table recovery runs on every
rebalance, the path of faust issue 596) and echoed to ``probe.out`` as
``{"p": partition, "o": offset, "k": key, "n": count}``. A test (or an operator checking a
cluster) produces numbered records, runs workers, kills some, and checks that every input
(partition, offset) appears on ``probe.out``. Used by ``tests/test_streams_rebalance.py``.

Run: ``python -m streams.probe worker -l info`` (settings from ``RETENTION_*``).
"""

from __future__ import annotations

import faust
import orjson

from streams.app import create_app
from streams.settings import Settings

PROBE_IN = "probe.in"
PROBE_OUT = "probe.out"
PROBE_TABLE = "probe-counts"


def register(app: faust.App, settings: Settings) -> dict[str, object]:
    src = app.topic(PROBE_IN, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw", partitions=settings.partitions)
    out = app.topic(PROBE_OUT, key_type=bytes, value_type=bytes, key_serializer="raw",
                    value_serializer="raw", partitions=settings.partitions)
    counts = app.Table(PROBE_TABLE, default=int, partitions=settings.partitions,
                       key_type=str, value_type=int)

    @app.agent(src, concurrency=1)
    async def probe(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            key = msg.key or b""
            k = key.decode("utf-8", "replace")
            counts[k] += 1
            await out.send(key=key, partition=msg.partition,
                           value=orjson.dumps({"p": msg.partition, "o": msg.offset, "k": k,
                                               "n": counts[k]}))

    return {"source": src, "out": out, "table": counts, "agent": probe}


def _build() -> faust.App:
    settings = Settings.from_env()
    return create_app(settings.replace(app_id=f"{settings.app_id}-probe"), register=register)


app = _build()

if __name__ == "__main__":
    app.main()
