"""A worker of the full retention topology with the operator surface and the online models.

    python -m streams.web.worker worker -l info        (settings from RETENTION_*)

Since ``streams.agents.register`` calls :func:`streams.web.register_views` itself, this is
``python -m streams worker`` (``register_views`` is idempotent). It remains for topologies
without online models of their own (no ``Settings.models``), to which it gives one
:class:`~models.scoring.ModelHub`, and for the tests and scripts that name it.
"""

from __future__ import annotations

import functools
from typing import Any

import faust

from streams.app import create_app
from streams.settings import Settings
from streams.web.views import register_views

__all__ = ["app", "build", "register"]


def register(app: faust.App, settings: Settings) -> Any:
    from streams.agents import register as register_topology

    topology = register_topology(app, settings)
    engine_cls = topology._engine_cls
    own_models = hasattr(settings, "models")   # the topology gives each partition a hub
    if not own_models and "scorer" not in getattr(engine_cls, "keywords", {}):
        from models.scoring import HubConfig, ModelHub

        config = getattr(topology, "engine_config", None)
        timeout = getattr(config, "session_timeout", None)
        hub = ModelHub(HubConfig(session_timeout=timeout) if timeout else HubConfig())
        topology.hub = hub
        topology._engine_cls = functools.partial(engine_cls, scorer=hub)
    register_views(app, topology, settings)
    return topology


def build(settings: Settings | None = None) -> faust.App:
    return create_app(settings or Settings.from_env(), register=register)


app = build()

if __name__ == "__main__":
    app.retention_topology.run_as_worker_process()
    app.main()
