"""``ModelHub``: the engine's scorer (the ``Scorer`` protocol of docs/ARCHITECTURE.md).

One learner per model, one writer (River models are not thread-safe and do not merge: the
streaming shell keeps agent ``concurrency=1`` per partition and one hub per worker).

The engine calls, for each key it touches (after applying the event to the state):

- ``on_session_end(key, state, session, now)`` for every session the engine closes (an order,
  another ``session_id``, or its inactivity timer), with the closed session dict;
- ``on_event(key, state, features, event, now)`` after every applied (non-duplicate) event;
- ``on_time(key, state, features, now)`` whenever a timer of that key fires, including the
  time returned by ``next_due(key, state, now)`` (merged into the engine's due-time index);
- ``merge_model_data(customer_state, visitor_state)`` when a visitor is linked to a customer
  (the open session's pending cart predictions move with the session);
- ``score(key, state, features, now)`` to get the scores stamped on the state and on the
  change events (pure: it never mutates the hub or the state).

``features`` is ``models.features.customer_features(state, now, cfg)``. Per-key model data
lives in ``state.model_data`` (JSON-serialisable, bounded).

Snapshots: ``hub.snapshot() -> bytes`` is a pickle of the learners, the metrics and the
population, preceded by a header and an HMAC-SHA256 of header + payload under the key of the
configuration. ``ModelHub.restore(blob, key)`` checks the signature with
``hmac.compare_digest`` *before* unpickling and raises :class:`SnapshotError` otherwise,
so bytes an outsider could write (a topic, a file) are never unpickled. The streaming shell
publishes the snapshots to a compacted topic keyed by hub (worker/partition) and restores the
latest one at start-up. A restored model whose encoding (``ABANDON_ENCODER`` / ``CHURN_ENCODER``
version) is not the code's own is replaced by a new one (cold start, prior first).
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from ..clock import parse_time
from .abandon import ABANDON_ENCODER, AbandonModel
from .churn import CHURN_ENCODER, ChurnModel
from .population import Population
from .value import clv_of, next_order_of

__all__ = ["HubConfig", "ModelHub", "SnapshotError", "SNAPSHOT_MAGIC"]

SNAPSHOT_MAGIC = b"RSHUB"
SNAPSHOT_FORMAT = 1
_HEADER = struct.Struct(">5sH")        # magic, format


class SnapshotError(ValueError):
    """A snapshot that is not ours: wrong magic, format, or signature."""


@dataclass(frozen=True, slots=True)
class HubConfig:
    horizon_days: float = 90.0           # churn: no order within H
    checkpoint_days: float = 30.0        # churn: a prediction every so often while quiet
    max_quiet_days: float = 730.0        # churn: no new prediction points after this quiet time
    warmup_labels: int = 200             # prior -> learned model hand-over (linear in labels)
    session_timeout: float = 1800.0      # the engine's session inactivity timeout (seconds)
    clv_horizon_days: float = 365.0
    clv_simple_blend_k: float = 0.0      # 0: BG/NBD x Gamma-Gamma only (see value.clv_of)
    next_order_prior_gaps: float = 1.0
    population_sample: int = 2000
    refit_every_days: float = 7.0
    min_refit_customers: int = 50
    # BG/NBD keeps its prior until the population has seen this many days of orders: fitted on
    # less, it predicted almost no repeat purchase for anyone and its 365-day expected orders
    # had a larger error than the prior's, on the simulator and on Online Retail
    # (docs/MODELS.md, "Population")
    bgnbd_min_history_days: float = 14.0
    # churn: the BG/NBD prior's logit is a fixed offset (linear.OnlineLogit): the model starts
    # as that prior and learns corrections to it, at a small rate (labels are many, noisy and
    # correlated). Chosen on the Online Retail evaluation (docs/MODEL_EVALUATION.md): with a
    # learned weight on the prior (before) and 0.0005 it lost to BG/NBD at 1 of 5 cutoffs
    churn_lr: float = 0.0002
    churn_lr_decay: float = 0.0          # 0: constant rate (see abandon_lr_decay)
    churn_lr_floor: float = 0.0
    churn_prior_offset: bool = True
    # abandonment: a rate decaying from abandon_lr as 1/sqrt(labels), floored (DecayingRate);
    # measured on the simulator (docs/MODEL_EVALUATION.md): constant 0.02 gave AUC 0.708,
    # this 0.748, the same as an offline logistic regression on the same inputs
    abandon_lr: float = 0.1
    abandon_lr_decay: float = 0.5
    abandon_lr_floor: float = 0.001
    l2: float = 1e-4
    top_reasons: int = 3
    max_cart_points: int = 8
    snapshot_key: bytes = field(default=b"", repr=False)   # HMAC-SHA256 key (from the settings)

    def without_secret(self) -> HubConfig:
        return replace(self, snapshot_key=b"")


class ModelHub:
    """All online models, their population parameters and their live metrics."""

    def __init__(self, config: HubConfig | None = None) -> None:
        cfg = config or HubConfig()
        self.config = cfg
        self.churn = _new_churn(cfg)
        self.abandon = _new_abandon(cfg)
        self.population = Population(cfg.population_sample, cfg.refit_every_days,
                                     cfg.min_refit_customers, cfg.bgnbd_min_history_days)
        self.snapshots = 0

    # -- Scorer protocol -----------------------------------------------------------------
    @property
    def versions(self) -> dict[str, str]:
        """The models' versions (every score carries them): built again only when one
        changed (a label learned, a refit). Not to be changed by the caller."""
        pop = self.population
        at = (self.churn.learner.n_learned, self.abandon.learner.n_learned, pop.refits)
        if at != getattr(self, "_versions_at", None):     # (not in older snapshots)
            self._versions = {"churn_risk": self.churn.version,
                              "abandon_risk": self.abandon.version,
                              "clv": f"bgnbd-gg/{pop.refits}",
                              "next_order": f"gap-shrink/{pop.refits}"}
            self._versions_at = at
        return self._versions

    def score(self, key: str, state: Any, features: dict, now: float) -> dict:
        cfg = self.config
        md = state.model_data
        churn, churn_reasons, churn_method, _x = self.churn.score(features, self.population)
        abandon, ab_reasons, ab_method, _x = self.abandon.score(state, features, md.get("cart"))
        clv, parts, clv_reasons = clv_of(features, self.population, cfg.clv_horizon_days,
                                         cfg.clv_simple_blend_k)
        next_at, next_reasons = next_order_of(features, now, self.population,
                                              cfg.next_order_prior_gaps)
        return {
            "churn_risk": churn,
            "abandon_risk": abandon,
            "clv": round(clv, 2),
            "clv_simple": round(parts["simple"], 2),
            "clv_btyd": round(parts["btyd"], 2),
            "p_alive": parts["p_alive"],
            "next_order_at": next_at,
            "due_to_reorder": next_at is not None and now > next_at,
            "reasons": {"churn_risk": churn_reasons, "abandon_risk": ab_reasons,
                        "clv": clv_reasons, "next_order_at": next_reasons},
            "methods": {"churn_risk": churn_method, "abandon_risk": ab_method},
            "versions": self.versions,
        }

    def on_event(self, key: str, state: Any, features: dict, event: dict, now: float) -> None:
        md = state.model_data
        t = now
        occurred = event.get("occurred_at")
        if isinstance(occurred, str):
            t = parse_time(occurred)
        elif isinstance(occurred, (int, float)):
            t = float(occurred)
        self.churn.on_event(md, features, event, self.population, now, t)
        self.abandon.on_event(md, state, features, event, now)
        if event.get("type") == "order_completed":
            self.population.observe(key, state.first_order_at, state.last_order_at,
                                    state.orders, features.get("aov") or 0.0)
        self.population.maybe_refit(now)

    def on_session_end(self, key: str, state: Any, session: dict, now: float) -> None:
        self.abandon.on_session_end(state.model_data, session, now)

    def merge_model_data(self, state: Any, visitor: Any) -> None:
        """Fold a linked visitor's model data into the customer's (the cart follows the session).

        Called by the engine when it links a visitor to a customer, before or after it moves the
        visitor's open session to the customer.
        """
        cart = visitor.model_data.get("cart")
        ident = self.abandon._ident
        if (cart is not None and "cart" not in state.model_data
                and cart["s"] == ident(visitor.session)
                and (state.session is None or ident(state.session) == cart["s"])):
            state.model_data["cart"] = cart

    def on_time(self, key: str, state: Any, features: dict, now: float) -> None:
        md = state.model_data
        self.churn.on_time(md, features, self.population, now)
        self.abandon.on_time(md, state, now)
        self.population.maybe_refit(now)

    def next_due(self, key: str, state: Any, now: float) -> float | None:
        md = state.model_data
        dues = [d for d in (self.churn.next_due(md),
                            self.abandon.next_due(md, state, self.config.session_timeout))
                if d is not None]
        return min(dues) if dues else None

    # -- operator view -------------------------------------------------------------------
    def describe(self) -> dict:
        """Versions, live metrics per model, population parameters (JSON-serialisable)."""
        return {"versions": self.versions, "churn_risk": self.churn.describe(),
                "abandon_risk": self.abandon.describe(), "population": self.population.describe(),
                "snapshots": self.snapshots}

    def refit_population(self, rows: list[tuple], now: float | None = None) -> None:
        """Refit BG/NBD + Gamma-Gamma from ``(x, t_x, T, orders, aov)`` rows (days)."""
        self.population.refit(rows, now)

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        key = self.config.snapshot_key
        if not key:
            raise SnapshotError("no snapshot key configured")
        self.snapshots += 1
        payload = pickle.dumps({"config": self.config.without_secret(), "churn": self.churn,
                                "abandon": self.abandon, "population": self.population,
                                "snapshots": self.snapshots}, protocol=pickle.HIGHEST_PROTOCOL)
        header = _HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_FORMAT)
        mac = hmac.new(key, header + payload, hashlib.sha256).digest()
        return header + mac + payload

    @classmethod
    def restore(cls, blob: bytes, key: bytes, config: HubConfig | None = None) -> ModelHub:
        """Load a snapshot whose HMAC checks under ``key``; refuse anything else unread."""
        if not key:
            raise SnapshotError("no snapshot key configured")
        n = _HEADER.size
        if not isinstance(blob, (bytes, bytearray)) or len(blob) < n + 32:
            raise SnapshotError("snapshot too short")
        header, mac, payload = bytes(blob[:n]), bytes(blob[n:n + 32]), bytes(blob[n + 32:])
        expected = hmac.new(key, header + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise SnapshotError("snapshot signature does not match: refused")
        magic, fmt = _HEADER.unpack(header)
        if magic != SNAPSHOT_MAGIC or fmt != SNAPSHOT_FORMAT:
            raise SnapshotError(f"unknown snapshot format {magic!r}/{fmt}")
        data = pickle.loads(payload)  # signed by us: see the module docstring
        hub = cls.__new__(cls)
        hub.config = replace(config or data["config"], snapshot_key=key)
        hub.churn, hub.abandon = data["churn"], data["abandon"]
        hub.population, hub.snapshots = data["population"], data["snapshots"]
        # a model learned over the inputs of another encoding (a snapshot taken before the
        # inputs changed) starts anew: its weights mean nothing for the current inputs, and
        # the pending points recorded under the old encoding are dropped as stale when their
        # labels come (BlendedClassifier.learn), never learned with the wrong meaning
        if hub.churn.encoder.version != CHURN_ENCODER.version:
            hub.churn = _new_churn(hub.config)
        if hub.abandon.encoder.version != ABANDON_ENCODER.version:
            hub.abandon = _new_abandon(hub.config)
        return hub


def _new_churn(cfg: HubConfig) -> ChurnModel:
    return ChurnModel(cfg.horizon_days, cfg.checkpoint_days, cfg.max_quiet_days,
                      cfg.warmup_labels, cfg.churn_lr, cfg.l2, cfg.top_reasons,
                      lr_decay=cfg.churn_lr_decay, lr_floor=cfg.churn_lr_floor,
                      prior_offset=cfg.churn_prior_offset)


def _new_abandon(cfg: HubConfig) -> AbandonModel:
    return AbandonModel(cfg.warmup_labels, cfg.abandon_lr, cfg.l2, cfg.top_reasons,
                        cfg.max_cart_points, lr_decay=cfg.abandon_lr_decay,
                        lr_floor=cfg.abandon_lr_floor)

