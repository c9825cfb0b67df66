"""The operator views of a worker, on Faust's own web server (``@app.page``).

=====================================  ======  =============================================
path                                   auth    what
=====================================  ======  =============================================
``/health/live``                       no      the process answers (200)
``/health/ready``                      no      200 when the worker can serve, 503 and the reasons
``/metrics``                           token   Prometheus text format (``streams.web.prom``)
``/retention/summary/``                token   the worker's counters, partitions, watermarks
``/customers/{id}``                    token   one customer (``customer_view`` v1), answered by
                                               the worker that owns the key (``@app.table_route``)
``/segments``                          token   definitions and version, sizes, entries and exits
``/models``                            token   live quality, drift, labels, versions (ModelHub)
``/flow``                              token   events by type, dead letters by stage, lag,
                                               last event time and watermark per partition
``/dashboard``                         no (1)  the dashboard page (HTML, JS and CSS only)
``/dashboard/series``                  token   the recorded time series the dashboard draws
=====================================  ======  =============================================

(1) The page and its script hold no data; everything they show comes from the token-protected
JSON views, which the page calls with the token the operator gives it.

Views report this worker's partitions. ``/segments`` and ``/flow`` take ``?scope=cluster`` to
ask every worker of the group (from the assignor's metadata) and merge their partitions.

Auth: when a token is configured (``RETENTION_WEB_TOKEN``, or ``Settings.web_token``), every
view but health and the static page needs ``Authorization: Bearer <token>``; the comparison
is constant-time. Faust forwards the header when it routes a lookup to another worker.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from faust.web import Request, Response, View
from faust.web.exceptions import WebError

from models.clock import format_time
from models.config import EngineConfig
from models.contract import ContractError, validate_output
from models.features import customer_features
from models.partitioning import partition_for
from models.state import CustomerState
from streams import state as _state
from streams.settings import APP_VERSION
from streams.web.customer import customer_view
from streams.web.observe import FlowSensor, Observer
from streams.web.prom import CONTENT_TYPE_LATEST, Metrics, model_summaries
from streams.web.recorder import Recorder

__all__ = ["WebSurface", "register_views"]

log = logging.getLogger(__name__)

JSON = "application/json"
_ASSETS = {"dashboard.html": "text/html; charset=utf-8",
           "dashboard.js": "application/javascript; charset=utf-8",
           "dashboard.css": "text/css; charset=utf-8"}
_EXACT_SCAN_LIMIT = 200_000
#: table keys that are not customers (Faust's own, the partition meta of streams.state)
_RESERVED_KEYS = tuple(k for k in (b"__faust", getattr(_state, "META_PREFIX", None)) if k)
#: set on a lookup forwarded to the key's owner (its value: the forwarding worker)
HOP_HEADER = "X-Retention-Forwarded-By"


def _iso(t: float | None) -> str | None:
    return format_time(t) if t is not None else None


def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    try:
        return float(v) if v else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, v, default)
        return default


def asset(name: str) -> bytes:
    """A file of ``streams/web/assets`` (shipped in the package: nothing from a CDN)."""
    return resources.files("streams.web").joinpath("assets", name).read_bytes()


class WebSurface:
    """Everything the views share: observer, metrics, recorder, token, readiness."""

    def __init__(self, app: Any, topology: Any, settings: Any,
                 token: str | None = None, sample_interval: float | None = None,
                 capacity: int | None = None) -> None:
        self.app = app
        self.topology = topology
        self.settings = settings
        if token is None:
            token = getattr(settings, "web_token", None) or os.environ.get("RETENTION_WEB_TOKEN")
        self.token = token or None
        self.observer = Observer(topology)
        self.sensor = FlowSensor(self.observer)
        self.metrics = Metrics(self.observer, app, lambda: self.readiness()[0], self.info)
        interval = sample_interval or _env_float("RETENTION_WEB_SAMPLE_INTERVAL", 5.0)
        cap = capacity or int(_env_float("RETENTION_WEB_SAMPLES", 720))
        self.recorder = Recorder(capacity=max(cap, 2), interval=interval)
        self._changes: deque[tuple[float, dict[tuple[str, str], int]]] = deque(
            maxlen=max(3, int(120 / interval) + 2))
        self._lat = (0, 0.0)
        self.started_at = time.time()
        self.route_timeout = _env_float("RETENTION_WEB_ROUTE_TIMEOUT", 10.0)

    # -- identity ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return str(self.app.conf.canonical_url)

    def info(self) -> dict[str, str]:
        return {"app_version": APP_VERSION,
                "definition_version": self.topology.catalog.definition_version}

    # -- auth ----------------------------------------------------------------------------
    def denied(self, view: View, request: Request) -> Response | None:
        """None when the request may proceed, else a 401 response."""
        if not self.token:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              self.token.encode()):
            return None
        return view.bytes(orjson.dumps({"error": "unauthorized",
                                        "detail": "send Authorization: Bearer <token> "
                                                  "(RETENTION_WEB_TOKEN of the worker)"}),
                          content_type=JSON, status=401,
                          headers={"WWW-Authenticate": 'Bearer realm="retention-scorer"'})

    # -- health --------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        app = self.app
        if getattr(app, "rebalancing", False):
            reasons.append("rebalancing")
        try:
            if not app.tables.recovery.completed.is_set():
                reasons.append("recovering tables")
        except Exception:  # noqa: BLE001
            reasons.append("tables not started")
        agent = getattr(self.topology, "agent", None)
        if agent is not None:
            if not agent.started:
                reasons.append("ingest agent not started")
            elif agent.crashed or any(getattr(a, "crashed", False)
                                      for a in list(getattr(agent, "_actors", ()))):
                reasons.append("ingest agent crashed")
        return not reasons, reasons

    # -- sampling ------------------------------------------------------------------------
    def sample(self, now: float | None = None) -> dict[str, float | None]:
        """Record one sample of the pictures (wall clock)."""
        t = time.time() if now is None else now
        obs = self.observer
        obs.poll()
        rec = self.recorder
        events = sum(obs.events_by_type.values())
        values: dict[str, float | None] = {
            "events_per_s": rec.rate("events", t, events),
            "messages_per_s": rec.rate("messages", t, sum(obs.messages_by_topic.values())),
            "dead_letters_per_s": rec.rate("dead_letters", t, sum(obs.dead_letters.values())),
            "changes_per_s": rec.rate("changes", t, sum(obs.segment_changes.values())),
        }
        lags = [v for v in obs.lag(self.app).values() if v is not None]
        values["lag_records"] = float(sum(lags)) if lags else None
        n0, s0 = self._lat
        n1, s1 = obs.latency_count, obs.latency_sum
        values["processing_ms"] = (s1 - s0) / (n1 - n0) * 1000 if n1 > n0 else None
        self._lat = (n1, s1)
        for seg, n in obs.segment_sizes().items():
            values[f"segment:{seg}"] = n
        for model, m in model_summaries(obs).items():
            for key in ("auc", "rolling_auc", "log_loss"):
                values[f"{key}:{model}"] = m.get(key)
        rec.record(t, values)
        self._changes.append((t, dict(obs.segment_changes)))
        return values

    def change_rates(self, window: float = 60.0) -> dict[tuple[str, str], float]:
        """Entries and exits per minute over (about) the last ``window`` seconds."""
        if len(self._changes) < 2:
            return {}
        t1, last = self._changes[-1]
        t0, first = self._changes[0]
        for t, snap in self._changes:
            if t1 - t <= window:
                t0, first = t, snap
                break
        if t1 <= t0:
            return {}
        return {k: (v - first.get(k, 0)) * 60.0 / (t1 - t0) for k, v in last.items()}

    # -- documents -----------------------------------------------------------------------
    def owned_partitions(self) -> set[int]:
        topo = self.topology
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001
            return set(topo.runtimes)
        return {tp.partition for tp in assignment if tp.topic in topo.input_names} | set(
            topo.runtimes)

    async def lookup(self, key: str) -> tuple[int, dict[str, Any]]:
        """:meth:`customer`, or for a worker whose engines are in its domain process
        (streams/split.py) the same document from the state, features and model versions
        that process holds now."""
        topo = self.topology
        remote = getattr(topo, "customer_lookup", None)
        p = partition_for(key, self.settings.partitions)
        if remote is None or p not in topo.runtimes or key.encode(
                "utf-8", "replace").startswith(_RESERVED_KEYS):
            return self.customer(key)
        found = await remote(key)
        if found is None:                 # revoked meanwhile
            return self.customer(key)
        state, features, versions, as_of = found
        return self._customer_doc(key, p, True, state, features, versions, as_of)

    def customer(self, key: str) -> tuple[int, dict[str, Any]]:
        """(status, document) of a lookup on this worker."""
        topo = self.topology
        p = partition_for(key, self.settings.partitions)
        if key.encode("utf-8", "replace").startswith(_RESERVED_KEYS):
            return 404, {"error": "not found", "detail": "not a customer key",
                         "customer_id": key[:64], "served_by": self.url}
        rt = topo.runtimes.get(p)
        owned = p in self.owned_partitions()
        engine = rt.processor.engine if rt is not None else None
        if hasattr(engine, "lookup"):
            return self._customer_doc(key, p, owned, *engine.lookup(key))
        # no engine here (or a split worker's mirror of one): the table, as last flushed
        raw = topo.customers.get(key.encode("utf-8")) if owned else None
        state = CustomerState.from_dict(raw) if isinstance(raw, dict) else None
        features, as_of = None, None
        if state is not None and not state.retired:
            as_of = state.local_time
            config = getattr(topo, "engine_config", None) or EngineConfig()
            features = customer_features(state, as_of or 0.0, config)
            features.update({"churn_risk": state.scores.get("churn_risk"),
                             "abandon_risk": state.scores.get("abandon_risk"),
                             "clv": state.scores.get("clv", features.get("clv_simple"))})
        return self._customer_doc(key, p, owned, state, features, None, as_of)

    def _customer_doc(self, key: str, p: int, owned: bool, state: CustomerState | None,
                      features: dict[str, Any] | None, versions: dict[str, str] | None,
                      as_of: float | None) -> tuple[int, dict[str, Any]]:
        topo = self.topology
        if state is not None and getattr(state, "retired", False):
            return 404, {"error": "not found", "customer_id": key, "partition": p,
                         "served_by": self.url, "linked": True,
                         "linked_to": getattr(state, "linked_to", None),
                         "detail": "this visitor was linked to a customer when they logged in "
                                   "or ordered: its history is in the customer's record (look "
                                   "the customer up; its 'aliases' list this id)"}
        if state is None:
            detail = ("no such customer" if owned else
                      f"partition {p} is not assigned to this worker (rebalancing?)")
            return 404, {"error": "not found", "detail": detail, "customer_id": key,
                         "partition": p, "served_by": self.url}
        doc = customer_view(state, features or {}, topo.catalog, as_of=as_of, partition=p,
                            served_by=self.url, model_versions=versions)
        try:
            validate_output("customer_view", doc)
        except ContractError as exc:
            log.error("customer view does not match its schema: %s", exc)
            return 500, {"error": "customer view does not match its schema",
                         "detail": str(exc), "served_by": self.url}
        return 200, doc

    def segments(self, exact: bool = False) -> dict[str, Any]:
        topo = self.topology
        cat = topo.catalog
        obs = self.observer
        obs.poll()
        counted = obs.segment_sizes()
        scanned: dict[str, int] | None = None
        if exact:
            scanned = {name: 0 for name in cat.segments}
            n = 0
            for engine in obs.engines().values():
                for key in list(engine.store):
                    n += 1
                    if n > _EXACT_SCAN_LIMIT:
                        break
                    st = engine.store.get(key)
                    for name in (st.segments if st is not None else ()):
                        scanned[name] = scanned.get(name, 0) + 1
        rates = self.change_rates()
        rows = []
        for name, seg in cat.segments.items():
            rows.append({
                "name": name, "description": seg.description,
                "enter": seg.enter.text, "exit": seg.exit.text,
                "min_dwell_seconds": seg.min_dwell, "holdout_percent": seg.holdout_percent,
                "drivers": list(seg.drivers),
                "members": (scanned or counted).get(name, 0),
                "entered_total": obs.segment_changes.get((name, "entered"), 0),
                "exited_total": obs.segment_changes.get((name, "exited"), 0),
                "entries_per_minute": round(rates.get((name, "entered"), 0.0), 3),
                "exits_per_minute": round(rates.get((name, "exited"), 0.0), 3),
            })
        per_partition = {str(p): {name: 0 for name in cat.segments}
                         for p in obs.engines()}
        for p, engine in obs.engines().items():
            for k, v in engine.counters.items():
                kind, _, name = k.partition(":")
                if kind in ("entered", "exited") and name:
                    per_partition[str(p)][name] = (per_partition[str(p)].get(name, 0)
                                                   + (v if kind == "entered" else -v))
        return {"worker": self.url, "scope": "worker", "partitions": sorted(obs.engines()),
                "definitions": {"version": cat.version, "digest": cat.digest,
                                "definition_version": cat.definition_version,
                                "source": cat.source},
                "members_from": "table scan" if exact else "change counters",
                "segments": rows, "members_by_partition": per_partition}

    def models(self) -> dict[str, Any]:
        partitions, report = self.observer.model_report()
        out: dict[str, Any] = {"worker": self.url, "scorers": len(partitions),
                               "partitions": partitions}
        if report is None:
            out.update(models={}, note="no online models on this worker's engines (models "
                                       "switched off, or no partition assigned yet)")
            return out
        out.update(report)
        return out

    def flow(self) -> dict[str, Any]:
        obs = self.observer
        obs.poll()
        lag = obs.lag(self.app)
        parts: dict[int, dict[str, Any]] = {}
        for tp, n in lag.items():
            row = parts.setdefault(tp.partition, {"partition": tp.partition, "lag": {}})
            row["lag"][tp.topic] = n
        for p, engine in obs.engines().items():
            row = parts.setdefault(p, {"partition": p, "lag": {}})
            clock = engine.clock
            row.update({"watermark": _iso(clock.watermark),
                        "last_event_time": _iso(clock.max_seen),
                        "events_applied": engine.counters.get("events", 0),
                        "late_events": engine.counters.get("late_events", 0),
                        "duplicates": engine.counters.get("duplicates", 0),
                        "timers_fired": engine.counters.get("timers_fired", 0)})
        for p, f in obs.partitions.items():
            row = parts.setdefault(p, {"partition": p, "lag": {}})
            row["messages"] = f.messages
            row["last_message_received_at"] = _iso(f.last_message_wall)
            row["last_record_timestamp"] = _iso(f.last_record_time / 1000.0
                                                if f.last_record_time else None)
        for row in parts.values():
            row["lag_total"] = sum(v for v in row["lag"].values() if v is not None)
        times = [e.clock.max_seen for e in obs.engines().values() if e.clock.max_seen]
        rec = self.recorder
        return {
            "worker": self.url, "scope": "worker", "uptime_seconds": time.time() - self.started_at,
            "partitions": [parts[p] for p in sorted(parts)],
            "events_by_type": dict(sorted(obs.events_by_type.items())),
            "events_total": sum(obs.events_by_type.values()),
            "messages_by_topic": dict(sorted(obs.messages_by_topic.items())),
            "dead_letters": {"total": sum(obs.dead_letters.values()),
                             "by_stage": obs.dead_letters_by_stage(),
                             "by_topic": {f"{t}|{s}": n for (t, s), n
                                          in sorted(obs.dead_letters.items())},
                             "last_at": _iso(obs.last_dead_letter_wall)},
            "segment_changes_total": sum(obs.segment_changes.values()),
            "engine": dict(sorted(obs.other.items())),
            "lag_total": sum(r["lag_total"] for r in parts.values()),
            "last_event_time": _iso(max(times)) if times else None,
            "processing": {"messages": obs.latency_count,
                           "mean_ms": (obs.latency_sum / obs.latency_count * 1000
                                       if obs.latency_count else None)},
            "rates": {k: rec.last(k) for k in ("events_per_s", "messages_per_s",
                                               "dead_letters_per_s", "changes_per_s")},
            "stats": dict(getattr(self.topology, "stats", {})),
            "rebalances": obs.rebalances,
        }

    # -- the group -----------------------------------------------------------------------
    def peers(self) -> list[str]:
        """Web URLs of every worker of the group (from the assignor's metadata)."""
        try:
            urls = set(self.app.router.tables_metadata())
        except Exception:  # noqa: BLE001
            urls = set()
        urls.add(self.url)
        return sorted(str(u).rstrip("/") for u in urls)

    async def scoped(self, request: Request, path: str, doc: dict,
                     merge: Callable[[dict, list[dict], list[dict]], dict]) -> dict:
        """``doc`` of this worker, or with ``?scope=cluster`` merged with every worker's."""
        if request.query.get("scope") != "cluster":
            return doc
        others, errors = await self.gather(path, request)
        return merge(doc, others, errors)

    async def gather(self, path: str, request: Request) -> tuple[list[dict], list[dict]]:
        """GET ``path?scope=worker`` from every worker; (documents, errors)."""
        headers = {}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        me = self.url.rstrip("/")

        async def one(base: str) -> dict:
            if base == me:
                return {"ok": True, "doc": None}
            url = f"{base}{path}?scope=worker"
            try:
                async with self.app.http_client.get(url, headers=headers,
                                                    timeout=_timeout(3.0)) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        return {"ok": False, "worker": base, "status": resp.status}
                    return {"ok": True, "doc": orjson.loads(body)}
            except Exception as exc:  # noqa: BLE001 - a peer that does not answer
                return {"ok": False, "worker": base, "error": f"{type(exc).__name__}: {exc}"}

        results = await asyncio.gather(*(one(b) for b in self.peers()))
        docs = [r["doc"] for r in results if r["ok"] and r["doc"] is not None]
        errors = [r for r in results if not r["ok"]]
        return docs, errors


def _timeout(seconds: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds)


def merge_segments(local: dict[str, Any], others: list[dict[str, Any]],
                   errors: list[dict]) -> dict[str, Any]:
    """One ``/segments`` document for the group (partitions are disjoint across workers)."""
    out = dict(local)
    rows = {r["name"]: dict(r) for r in local["segments"]}
    parts = set(local["partitions"])
    by_part = dict(local["members_by_partition"])
    workers = [local["worker"]]
    for doc in others:
        workers.append(doc["worker"])
        parts |= set(doc["partitions"])
        by_part.update(doc.get("members_by_partition", {}))
        for r in doc["segments"]:
            row = rows.setdefault(r["name"], dict(r, members=0, entered_total=0, exited_total=0,
                                                  entries_per_minute=0.0,
                                                  exits_per_minute=0.0))
            if row is r:
                continue
            for k in ("members", "entered_total", "exited_total", "entries_per_minute",
                      "exits_per_minute"):
                row[k] = row.get(k, 0) + r.get(k, 0)
    out.update(scope="cluster", workers=workers, partitions=sorted(parts),
               segments=list(rows.values()), members_by_partition=by_part,
               unreachable=errors)
    return out


def merge_flow(local: dict[str, Any], others: list[dict[str, Any]],
               errors: list[dict]) -> dict[str, Any]:
    out = dict(local)
    parts = {r["partition"]: r for r in local["partitions"]}
    events = dict(local["events_by_type"])
    stages = dict(local["dead_letters"]["by_stage"])
    workers = [local["worker"]]
    total_events, dl, lag = local["events_total"], local["dead_letters"]["total"], local["lag_total"]
    last = [local["last_event_time"]] if local["last_event_time"] else []
    for doc in others:
        workers.append(doc["worker"])
        for r in doc["partitions"]:
            parts.setdefault(r["partition"], dict(r, worker=doc["worker"]))
        for k, v in doc["events_by_type"].items():
            events[k] = events.get(k, 0) + v
        for k, v in doc["dead_letters"]["by_stage"].items():
            stages[k] = stages.get(k, 0) + v
        total_events += doc["events_total"]
        dl += doc["dead_letters"]["total"]
        lag += doc["lag_total"]
        if doc.get("last_event_time"):
            last.append(doc["last_event_time"])
    out.update(scope="cluster", workers=workers, partitions=[parts[p] for p in sorted(parts)],
               events_by_type=events, events_total=total_events, lag_total=lag,
               last_event_time=max(last) if last else None, unreachable=errors)
    out["dead_letters"] = dict(local["dead_letters"], total=dl, by_stage=stages)
    return out


def register_views(app: Any, topology: Any, settings: Any, *,
                   token: str | None = None, sample_interval: float | None = None,
                   ) -> WebSurface:
    """Register the operator views, the Prometheus endpoint, the dashboard, the flow
    sensor and the sampling timer on ``app``. Idempotent (a second call returns the first
    surface). Call it once the topology is registered (``streams.agents.register``)."""
    existing = getattr(app, "retention_web", None)
    if existing is not None:
        return existing
    surface = WebSurface(app, topology, settings, token=token,
                         sample_interval=sample_interval)
    app.retention_web = surface
    app.sensors.add(surface.sensor)
    bind = getattr(settings, "web_bind", "127.0.0.1")
    if not surface.token and bind not in ("127.0.0.1", "localhost", "::1"):
        log.warning("web views bound to %s without a token: set RETENTION_WEB_TOKEN", bind)

    def json_response(view: View, status: int, doc: Any) -> Response:
        return view.bytes(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS),
                          content_type=JSON, status=status)

    @app.page("/health/live", name="retention_health_live")
    class Live(View):
        async def get(self, request: Request) -> Response:
            return json_response(self, 200, {"status": "live", "worker": surface.url,
                                             "uptime_seconds": time.time() - surface.started_at})

    @app.page("/health/ready", name="retention_health_ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ok, reasons = surface.readiness()
            return json_response(self, 200 if ok else 503,
                                 {"status": "ready" if ok else "not ready", "reasons": reasons,
                                  "worker": surface.url,
                                  "partitions": sorted(surface.topology.runtimes)})

    @app.page("/retention/summary/", name="retention_summary")
    class Summary(View):
        async def get(self, request: Request) -> Response:
            if (denied := surface.denied(self, request)) is not None:
                return denied
            return json_response(self, 200, surface.topology.summary())

    @app.page("/metrics", name="retention_metrics")
    class PromMetrics(View):
        async def get(self, request: Request) -> Response:
            if (denied := surface.denied(self, request)) is not None:
                return denied
            return self.bytes(surface.metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/customers/{customer_id}", name="retention_customer")
    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            if (denied := surface.denied(self, request)) is not None:
                return denied
            if request.headers.get(HOP_HEADER):
                # forwarded once already: answer here, never forward again (two workers with
                # stale assignments in a rebalance would otherwise bounce it between them)
                status, doc = await surface.lookup(customer_id)
                return json_response(self, status, doc)
            marked = request.clone(headers={**request.headers, HOP_HEADER: surface.url})
            try:
                return await asyncio.wait_for(self.routed(marked, customer_id=customer_id),
                                              surface.route_timeout)
            except asyncio.TimeoutError:
                return json_response(self, 504, {
                    "error": "owner did not answer",
                    "detail": f"the worker owning this key did not answer within "
                              f"{surface.route_timeout:g}s; retry, or ask /health/ready "
                              f"of the workers", "customer_id": customer_id})
            except Exception as exc:  # noqa: BLE001 - owner unreachable (mid-rebalance)
                if isinstance(exc, WebError):
                    raise
                log.warning("routing a lookup failed: %s: %s", type(exc).__name__, exc)
                return json_response(self, 503, {
                    "error": "owner unreachable",
                    "detail": f"{type(exc).__name__}: {exc}; the group may be rebalancing, "
                              f"retry in a few seconds", "customer_id": customer_id})

        @app.table_route(table=topology.customers, match_info="customer_id")
        async def routed(self, request: Request, customer_id: str) -> Response:
            status, doc = await surface.lookup(customer_id)
            return json_response(self, status, doc)

    @app.page("/segments", name="retention_segments")
    class Segments(View):
        async def get(self, request: Request) -> Response:
            if (denied := surface.denied(self, request)) is not None:
                return denied
            exact = request.query.get("exact") in ("1", "true", "yes")
            doc = await surface.scoped(request, "/segments", surface.segments(exact=exact),
                                       merge_segments)
            return json_response(self, 200, doc)

    @app.page("/models", name="retention_models")
    class Models(View):
        async def get(self, request: Request) -> Response:
            if (denied := surface.denied(self, request)) is not None:
                return denied
            return json_response(self, 200, surface.models())

    @app.page("/flow", name="retention_flow")
    class Flow(View):
        async def get(self, request: Request) -> Response:
            if (denied := surface.denied(self, request)) is not None:
                return denied
            doc = await surface.scoped(request, "/flow", surface.flow(), merge_flow)
            return json_response(self, 200, doc)

    @app.page("/dashboard", name="retention_dashboard")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(asset("dashboard.html"), content_type="text/html")

    @app.page("/dashboard/{name}", name="retention_dashboard_asset")
    class DashboardAsset(View):
        async def get(self, request: Request, name: str) -> Response:
            if name == "series":
                if (denied := surface.denied(self, request)) is not None:
                    return denied
                since = request.query.get("since")
                try:
                    after = float(since) if since else None
                except ValueError:
                    after = None
                doc = surface.recorder.export(after)
                doc.update(worker=surface.url, now=time.time(),
                           definition_version=surface.topology.catalog.definition_version)
                return json_response(self, 200, doc)
            if name not in _ASSETS or name == "dashboard.html":
                return json_response(self, 404, {"error": "not found"})
            ctype = _ASSETS[name].split(";")[0]
            return self.bytes(asset(name), content_type=ctype)

    @app.timer(surface.recorder.interval, name="retention_web_sampler")
    async def sampler() -> None:
        try:
            surface.sample()
        except Exception:  # noqa: BLE001 - pictures must never take the worker down
            log.exception("sampling the operator metrics failed")

    del Live, Ready, PromMetrics, Customer, Segments, Models, Flow, Dashboard, DashboardAsset
    return surface

