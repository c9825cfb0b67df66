"""The operator surface of a worker: web views, Prometheus metrics, time series, dashboard.

Everything runs on the worker's own Faust web server (bound to ``RETENTION_WEB_BIND``,
127.0.0.1 by default) and reads the topology without changing it. Wiring, once per App,
after the topology is registered::

    topology = streams.agents.register(app, settings)
    streams.web.register_views(app, topology, settings)

See ``streams/web/views.py`` for the paths and ``docs/OPERATORS.md`` for the operator guide.
"""

from __future__ import annotations

from streams.web.views import WebSurface, register_views

__all__ = ["WebSurface", "register_views"]
