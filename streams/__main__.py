"""Command line: ``python -m streams COMMAND``.

    worker [faust worker options]   run a worker (Faust's ``app.main()``; settings from RETENTION_*)
    demo [--rate N] [--duration S] [--customers N]
                                    embedded broker + topics + a worker + the shopper simulator,
                                    segment changes and a live summary until Ctrl-C / --duration
    produce FILE.jsonl [--topic T]  send events (kafka-python), routed by type, keyed by customer
    tail TOPIC [--from-beginning]   print a topic (any output: segments.changes, *.dlq, ...)
    topics [--create]               print (or create) the topic catalogue
    broker                          run the embedded broker alone until Ctrl-C

Every other command is passed to Faust (``python -m streams tables``, ``agents``, ...).
"""

from __future__ import annotations

import sys
from pathlib import Path

LOCAL_COMMANDS = {"demo", "produce", "tail", "topics", "broker"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LOCAL_COMMANDS:
        from streams import cli

        return cli.main(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        if not argv:
            return 2
    if argv[0] == "worker":
        return _run_worker(argv)
    from streams.app import app

    sys.argv = ["python -m streams", *argv]
    app.main()
    return 0


CLEAN_STOP_MARKER = "clean-stop"


def trust_local_tables(data_dir: str | Path) -> bool:
    """Keep this worker's local table copies (RocksDB) only if it stopped cleanly last time.

    Faust writes a table change to RocksDB at once but sends it to the changelog later; a
    worker killed in between keeps local values that never reached the changelog, and would
    go on from them while the changelog (what any other worker recovers) stays behind. After
    an unclean stop the local copies are dropped, so the tables are rebuilt from the
    changelogs: a consistent prefix of the stream, from which the replayed events (skipped
    or reapplied by their source positions) give exactly the uninterrupted result.
    Returns True when the local copies were kept (or there were none).
    """
    import shutil

    data = Path(data_dir)
    marker = data / CLEAN_STOP_MARKER
    tables = [d for d in data.glob("v*/tables") if d.is_dir()]
    clean = marker.exists()
    marker.unlink(missing_ok=True)
    if tables and not clean:
        print(f"the worker did not stop cleanly last time: its local tables in {data} are "
              "dropped and rebuilt from the changelogs", file=sys.stderr, flush=True)
        for d in tables:
            shutil.rmtree(d, ignore_errors=True)
        return False
    return True


def _run_worker(argv: list[str]) -> int:
    """``worker``: check the configuration, decide on local tables, run Faust's worker, and
    record a clean stop."""
    from streams.settings import Settings
    from streams.web.preflight import preflight, report

    settings = Settings.from_env()
    if report(preflight(settings)):
        return 2
    if settings.store.startswith("rocksdb"):
        trust_local_tables(settings.data_dir)
    from streams.app import app

    app.retention_topology.run_as_worker_process()
    sys.argv = ["python -m streams", *argv]
    code: object = 0
    try:
        app.main()
    except SystemExit as exc:
        code = exc.code
    if code in (0, None):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        (Path(settings.data_dir) / CLEAN_STOP_MARKER).touch()
    return code if isinstance(code, int) else (0 if code is None else 1)


if __name__ == "__main__":
    sys.exit(main())
