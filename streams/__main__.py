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
    from streams.app import app

    sys.argv = ["python -m streams", *argv]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
