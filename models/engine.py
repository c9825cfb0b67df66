"""The engine: the one entry point from events to segment changes.

``Engine.process(event)`` applies one validated event to its customer's state and returns
the segment changes it causes; ``Engine.advance(to_time)`` fires the timers that event time
has passed (session timeouts, time-based segments, model checkpoints) for customers who
sent nothing. Event time alone drives it, so the same events give the same changes.

How time works. Each key keeps its own clock (``local_time``, never going back). Before an
event of a customer at time ``t`` is applied, that customer's own timers due up to ``t``
fire first, at their due times. The engine's watermark (max event time seen minus the
allowed lateness) fires the timers of everyone else through the due-time index, a heap of
(due time, key) entries, so a quiet customer's time-based change fires on time without any
scan. Either way a timer fires at its due time with the same state, so the facts of a
change do not depend on when the watermark happened to pass it.

Late events (older than the watermark, or older than the customer's own clock) are counted
and applied: orders, revenue, feedback and counts stay right. Changes they cause are
stamped at the customer's clock, since a timer that already fired is never un-fired.

Idempotence. Duplicate event ids (the last 64 per key) and repeated order ids are dropped.
With ``position=(source, offset)`` an event at or below the last applied offset of that
source for that key is skipped, so a replay after a crash leaves state exact. Every change
carries a deterministic ``event_id``.

>>> eng = Engine()
>>> out = eng.process({"event_id": "e1", "type": "order_completed", "customer_id": "c1",
...     "occurred_at": "2025-01-01T10:00:00Z", "schema_version": "1", "order_id": "o1",
...     "currency": "GBP", "subtotal": 60.0, "discount": 0, "shipping": 0, "tax": 0,
...     "total": 60.0, "lines": [{"product_id": "p1", "quantity": 1, "price": 60.0}]})
>>> sorted((c["segment"], c["change"]) for c in out)
[('active', 'entered'), ('first_time', 'entered')]
>>> changes = eng.advance(eng.clock.watermark + 100 * 86400)
>>> sorted((c["segment"], c["change"]) for c in changes)
[('first_time', 'exited'), ('one_time_buyer', 'entered')]
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from typing import Any, Iterable, MutableMapping, Protocol

import orjson

from .clock import EventClock, format_time, parse_time
from .config import EngineConfig
from .features import ALL_GROUPS, customer_features, time_anchors
from .profile import apply_cancellation, apply_feedback, apply_order
from .segments import Catalog, SegmentDef, load_catalog
from .session import apply_cart, close_session, open_or_continue, see_item, session_due
from .state import ALIASES_KEPT, RECENT_CHANGES_KEPT, CustomerState
from .store_metrics import StoreMetrics

__all__ = ["Engine", "Scorer", "ProcessingError", "change_id", "SCHEMA_VERSION"]

SCHEMA_VERSION = "1"
SESSION_TYPES = frozenset({
    "page_view", "product_viewed", "search", "product_added", "product_removed",
    "checkout_started", "checkout_step", "order_completed",
})
_MAX_TIMER_STEPS = 64
# feature groups each event type can change (see models.features.feature_group)
_TOUCHES: dict[str, frozenset[str]] = {
    **{k: frozenset({"browse", "session"}) for k in SESSION_TYPES},
    "order_completed": frozenset({"browse", "session", "purchase"}),
    "order_refunded": frozenset({"purchase"}),
    "order_cancelled": frozenset({"purchase"}),
    "review_submitted": frozenset({"feedback"}),
    "support_ticket": frozenset({"feedback"}),
    "delivery_issue": frozenset({"feedback"}),
}
_SESSION_ONLY = frozenset({"session"})
_NOTHING: frozenset[str] = frozenset()


class ProcessingError(ValueError):
    """A valid event the engine cannot apply (for example an unknown currency)."""


class Scorer(Protocol):
    """What the engine needs from the online models (see ``models.scoring``)."""

    versions: dict[str, str]

    def score(self, key: str, state: CustomerState, features: dict, now: float) -> dict: ...
    def on_event(self, key: str, state: CustomerState, features: dict, event: dict, now: float) -> None: ...
    def on_session_end(self, key: str, state: CustomerState, session: dict, now: float) -> None: ...
    def on_time(self, key: str, state: CustomerState, features: dict, now: float) -> None: ...
    def next_due(self, key: str, state: CustomerState, now: float) -> float | None: ...


def change_id(key: str, segment: str, change: str, cause: str, version: str) -> str:
    """Deterministic id of a change: the same facts always give the same id.

    >>> change_id("c1", "vip", "entered", "e9", "1+abc") == change_id("c1", "vip", "entered", "e9", "1+abc")
    True
    """
    raw = f"{key}\x1f{segment}\x1f{change}\x1f{cause}\x1f{version}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def in_holdout(key: str, segment: str, percent: float) -> bool:
    """Persistent, hash-based holdout assignment of a key for a segment."""
    if percent <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(f"holdout\x1f{segment}\x1f{key}".encode()).digest()[:4], "big")
    return (h % 10000) < percent * 100


def event_key(event: dict[str, Any]) -> str:
    return event.get("customer_id") or event["anonymous_id"]


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


class Engine:
    """Per-partition engine: state store, event-time clock and due-time index."""

    def __init__(self, config: EngineConfig | None = None, catalog: Catalog | None = None,
                 scorer: Scorer | None = None,
                 store: MutableMapping[str, CustomerState] | None = None,
                 full_evaluation: bool = False) -> None:
        self.full_evaluation = full_evaluation
        self.config = config or EngineConfig()
        self.catalog = catalog or load_catalog()
        self.scorer = scorer
        self.store: MutableMapping[str, CustomerState] = store if store is not None else {}
        self.clock = EventClock(self.config.allowed_lateness)
        self.metrics = StoreMetrics()
        self.counters: Counter[str] = Counter()
        self._heap: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self._segments: tuple[SegmentDef, ...] = tuple(self.catalog.segments.values())
        self._by_groups: dict[frozenset[str], list[SegmentDef]] = {}

    # ------------------------------------------------------------------ public API
    def process(self, event: dict[str, Any], position: tuple[str, int] | None = None,
                received_at: float | None = None, visitor: dict | None = None,
                as_key: str | None = None) -> list[dict]:
        """Apply one validated event; return the changes it (and the watermark it moves) causes.

        ``position`` is the event's (source, offset), for exact replay after a crash;
        ``received_at`` is when the transport received it (the Kafka record timestamp): an
        event claiming to happen further ahead of it than ``max_future_skew`` is refused, so
        one bad clock cannot drag the watermark into the future. ``visitor`` is the state of
        the event's ``anonymous_id`` handed over by the engine that owns it (see
        ``export_visitor``) when that key lives on another partition.

        Identity: an anonymous-only event of a visitor already linked to a customer is that
        customer's (the same device, logged out): it is applied to the customer's state when
        that state is in this engine; ``as_key`` names the customer when the caller routed
        the event here from the visitor's engine (see ``redirect_of``).
        """
        key = event_key(event) if as_key is None else as_key
        t = parse_time(event["occurred_at"])
        if received_at is not None and t > received_at + self.config.max_future_skew:
            raise ProcessingError(
                f"occurred_at is {(t - received_at) / 3600:.1f} h ahead of the time it was received "
                f"(more than max_future_skew = {self.config.max_future_skew / 3600:g} h)")
        kind = event["type"]
        state = self.store.get(key)
        if position is not None and state is not None:
            source, offset = position
            if state.positions.get(source, -1) >= offset:
                self.counters["replayed_skipped"] += 1
                return self.complete_link(event, position)
        if "currency" in event:
            try:
                self.config.to_store_currency(0.0, event["currency"])
            except ValueError as exc:
                raise ProcessingError(str(exc)) from None
        self.counters["events"] += 1
        self.counters["type:" + kind] += 1
        if self.clock.observe(t) == "late":
            self.counters["late_events"] += 1
        if kind == "erasure_requested":
            out = self._erase(key, event, t)
            return out + self._advance_watermark()
        if state is not None and state.retired:
            if event["event_id"] in state.seen_ids:     # a re-delivery of a linked visitor's event
                self.counters["duplicates"] += 1
                self._remember_position(state, position)
                self._put(state)
                return []
            target = self._linked_customer(state, event)
            if target is not None:                      # the linked customer's, logged out
                self._remember_position(state, position)
                self._put(state)
                key, state = target.key, target
                self.counters["identity_redirects"] += 1
                if position is not None and state.positions.get(position[0], -1) >= position[1]:
                    # replayed after a crash that wrote the customer but not the marker
                    self.counters["replayed_skipped"] += 1
                    return []
                if self._seen_before(state, event, position):
                    return []
                return self._apply_event(state, key, event, kind, t, position)
            state = CustomerState(key=key, customer_id=event.get("customer_id"),
                                  anonymous=event.get("customer_id") is None, first_seen_at=t,
                                  positions=dict(state.positions), seen_ids=list(state.seen_ids))
        if state is None:
            cid = event.get("customer_id")
            state = CustomerState(key=key, customer_id=cid, anonymous=cid is None, first_seen_at=t)
        if self._seen_before(state, event, position):
            return []
        return self._apply_event(state, key, event, kind, t, position, visitor)

    def _seen_before(self, state: CustomerState, event: dict[str, Any],
                     position: tuple[str, int] | None) -> bool:
        """Remember the event's id in ``state``; on a duplicate, count it and keep only its
        position (so a replay skips it too). True for a duplicate."""
        if state.remember_id(event["event_id"]):
            return False
        state.duplicates += 1
        self.counters["duplicates"] += 1
        self._remember_position(state, position)
        self._put(state)
        return True

    def _apply_event(self, state: CustomerState, key: str, event: dict[str, Any], kind: str,
                     t: float, position: tuple[str, int] | None,
                     visitor: dict | None = None) -> list[dict]:
        outputs: list[dict] = []
        touched = _TOUCHES.get(kind, ALL_GROUPS)
        if state.definition_version != self.catalog.definition_version:
            state.definition_version = self.catalog.definition_version
            state.seg_due = {}
            touched = ALL_GROUPS
        # the customer's own timers first (a stale session closes), then a visitor linked by
        # this event is folded in: its open session, if newer, becomes the customer's
        outputs += self._advance_customer(state, t)
        anon = event.get("anonymous_id")
        if anon and anon != key and event.get("customer_id") and (
                anon not in state.aliases or visitor is not None or self.state_of(anon) is not None):
            outputs += self._link(state, anon, event, t, visitor)
            touched = ALL_GROUPS
        now = t if state.local_time is None or t > state.local_time else state.local_time
        if state.last_event_at is not None and t < state.last_event_at:
            state.late_events += 1
        state.local_time = now
        state.events += 1
        closed = self._apply(state, event, t)
        features = customer_features(state, now, self.config)
        scorer = self.scorer
        if scorer is not None:
            for sess in closed:
                scorer.on_session_end(key, state, sess, now)
            scorer.on_event(key, state, features, event, now)
        self._score(state, features, now)
        looks = self._needs_look(state, touched, now)
        outputs += self._evaluate(state, features, now, "event", event["event_id"], looks)
        self._schedule(state, features, now, looks)
        self._remember_position(state, position)
        self._put(state)
        return outputs + self._advance_watermark()

    def advance(self, to_time: float) -> list[dict]:
        """Fire every timer due at or before ``to_time`` (event time)."""
        outputs: list[dict] = []
        heap = self._heap
        while heap and heap[0][0] <= to_time:
            due, key = heapq.heappop(heap)
            state = self.store.get(key)
            if state is None or state.due_at != due:
                continue  # stale entry: the key was rescheduled or erased
            # one timer at a time, so changes come out in event-time order across keys
            outputs += self._advance_customer(state, due)
            self._put(state)
        return outputs

    def _linked_customer(self, marker: CustomerState, event: dict[str, Any]) -> CustomerState | None:
        """The customer state an anonymous-only event of the linked visitor ``marker``
        belongs to, when it is in this engine."""
        if event.get("customer_id") or marker.linked_to is None:
            return None
        target = self.store.get(marker.linked_to)
        return None if target is None or target.retired else target

    def redirect_of(self, event: dict[str, Any]) -> str | None:
        """The customer an anonymous-only ``event`` belongs to when its visitor was linked to
        a customer whose state lives in another engine (partition); the caller then hands the
        event to that engine with ``process(event, as_key=...)``. None otherwise."""
        if event.get("customer_id"):
            return None
        state = self.store.get(event_key(event))
        if state is None or not state.retired or state.linked_to is None \
                or event["event_id"] in state.seen_ids:
            return None
        return None if self._linked_customer(state, event) is not None else state.linked_to

    def complete_link(self, event: dict[str, Any], position: tuple[str, int]) -> list[dict]:
        """Finish a link that a crash cut in two. ``event`` (both ids) is replayed and its
        customer's state already holds it (skipped by position), but the visitor it linked is
        still live in this engine: the customer's state reached the table, the visitor's
        marker did not (the streaming shell writes markers last for this reason). Retire the
        visitor now, with the exit changes of the first run (same ids).

        A visitor that has applied an event of the same source after the link is not touched.
        """
        anon, cid = event.get("anonymous_id"), event.get("customer_id")
        if not anon or not cid or anon == cid:
            return []
        visitor, customer = self.state_of(anon), self.state_of(cid)
        if visitor is None or customer is None or anon not in customer.aliases:
            return []
        source, offset = position
        if visitor.positions.get(source, -1) >= offset:
            return []
        out = self._exit_linked(visitor, event, parse_time(event["occurred_at"]), cid)
        self._retire(visitor, cid)
        self.counters["links_completed"] += 1
        return out

    def resolve(self, key: str) -> str:
        """The key holding ``key``'s state: its customer for a linked visitor, else itself."""
        state = self.store.get(key)
        if state is not None and state.retired and state.linked_to is not None:
            return state.linked_to
        return key

    def state_of(self, key: str) -> CustomerState | None:
        state = self.store.get(key)
        return None if state is None or state.retired else state

    def features_of(self, key: str, now: float | None = None) -> dict[str, Any] | None:
        state = self.state_of(key)
        if state is None:
            return None
        at = now if now is not None else (state.local_time or 0.0)
        f = customer_features(state, at, self.config)
        f.update(self._score_features(state, f))
        return f

    def lookup(self, key: str) -> tuple[CustomerState | None, dict[str, Any] | None,
                                         dict[str, str] | None, float | None]:
        """``(state, features, model versions, as of)`` of ``key`` for a lookup: the
        features at the customer's own local time, or at the partition's newest event time
        when that is later. Only the state for an unknown key (None) or a retired visitor."""
        state = self.store.get(key)
        if state is None or state.retired:
            return state, None, None, None
        as_of = state.local_time
        seen = self.clock.max_seen
        if seen is not None and (as_of is None or seen > as_of):
            as_of = seen
        versions = dict(self.scorer.versions) if self.scorer is not None else None
        return state, self.features_of(key, as_of), versions, as_of

    def dirty_keys(self) -> set[str]:
        """Keys changed (or erased: no longer in the store) since the last ``clear_dirty``."""
        return self._dirty

    def clear_dirty(self) -> None:
        self._dirty = set()

    def rebuild_index(self, keys: Iterable[str] | None = None) -> int:
        """Rebuild the due-time index from the store (after a restore); return its size."""
        heap = []
        for key in (keys if keys is not None else list(self.store.keys())):
            state = self.store.get(key)
            if state is not None and state.due_at is not None:
                heap.append((state.due_at, key))
        heapq.heapify(heap)
        self._heap = heap
        return len(heap)

    def load_index(self, entries: Iterable[tuple[float, str]]) -> int:
        """Set the due-time index from ``(due time, key)`` pairs read from a store without
        loading the states (``streams.state.partition_index``); return its size.

        >>> e = Engine()
        >>> e.load_index([(20.0, "b"), (10.0, "a")]), e._heap[0]
        (2, (10.0, 'a'))
        """
        heap = [(float(t), str(k)) for t, k in entries]
        heapq.heapify(heap)
        self._heap = heap
        return len(heap)

    def dump_state(self) -> bytes:
        """Everything the engine holds (meta and every key's state) as JSON bytes."""
        return orjson.dumps({"meta": self.export_meta(),
                             "states": {k: v.to_dict() for k, v in self.store.items()}},
                            option=orjson.OPT_SORT_KEYS)

    def load_state(self, blob: bytes) -> None:
        """Restore what ``dump_state`` saved (into the current store) and rebuild the index."""
        doc = orjson.loads(blob)
        self.import_meta(doc["meta"])
        for k, v in doc["states"].items():
            self.store[k] = CustomerState.from_dict(v)
        self.rebuild_index()

    def export_meta(self) -> dict[str, Any]:
        return {"clock": self.clock.to_dict(), "metrics": self.metrics.to_dict(),
                "counters": dict(self.counters)}

    def import_meta(self, meta: dict[str, Any]) -> None:
        self.clock = EventClock.from_dict(meta["clock"])
        self.metrics = StoreMetrics.from_dict(meta["metrics"])
        self.counters = Counter(meta.get("counters", {}))

    # ------------------------------------------------------------------ internals
    def _put(self, state: CustomerState) -> None:
        self.store[state.key] = state
        self._dirty.add(state.key)

    @staticmethod
    def _remember_position(state: CustomerState, position: tuple[str, int] | None) -> None:
        if position is not None:
            state.positions[position[0]] = position[1]

    def _advance_watermark(self) -> list[dict]:
        wm = self.clock.watermark
        if wm is None or not self._heap or self._heap[0][0] > wm:
            return []
        return self.advance(wm)

    def _apply(self, state: CustomerState, event: dict[str, Any], t: float) -> list[dict]:
        """Apply the event to profile and session; return sessions it closed."""
        kind = event["type"]
        cfg = self.config
        closed: list[dict] = []
        if kind in SESSION_TYPES and state.session is None and state.last_session_end is not None \
                and t <= state.last_session_end:
            # late: it belongs to a session that is already closed (by its order or timeout).
            # Count it, but open no phantom session and start no cart.
            self.counters["late_for_closed_session"] += 1
            if kind == "page_view":
                state.page_views += 1
            elif kind == "product_viewed":
                state.product_views += 1
            elif kind == "search":
                state.searches += 1
            elif kind == "checkout_started":
                state.checkouts_started += 1
            elif kind == "order_completed":
                self._apply_order(state, event, t)
            return closed
        if kind in SESSION_TYPES:
            if state.last_event_at is None or t > state.last_event_at:
                state.last_event_at = t
            prev = open_or_continue(state, event, t, cfg.session_timeout)
            if prev is not None:
                closed.append(prev)
            sess = state.session
            assert sess is not None
            if kind == "page_view":
                state.page_views += 1
                sess["page_views"] += 1
            elif kind == "product_viewed":
                state.product_views += 1
                sess["product_views"] += 1
                see_item(sess, event.get("price"), event.get("list_price"))
            elif kind == "search":
                state.searches += 1
                sess["searches"] += 1
            elif kind in ("product_added", "product_removed"):
                if kind == "product_added" and not sess["had_cart"]:
                    state.carts_started += 1
                apply_cart(sess, event)
            elif kind in ("checkout_started", "checkout_step"):
                if kind == "checkout_started":
                    state.checkouts_started += 1
                sess["checkout"] = True
            elif kind == "order_completed":
                self._apply_order(state, event, t)
                closed.append(close_session(state, max(t, sess["last_at"]), ordered=True))
        elif kind in ("order_refunded", "order_cancelled"):
            before = state.refunded_amount
            if apply_cancellation(state, event, cfg):
                self.metrics.on_refund(state.refunded_amount - before)
        elif kind in ("review_submitted", "support_ticket", "delivery_issue"):
            apply_feedback(state, event, t, cfg)
        return closed

    def _apply_order(self, state: CustomerState, event: dict[str, Any], t: float) -> None:
        orders_before, last_before = state.orders, state.last_order_at
        if apply_order(state, event, t, self.config):
            total = state.recent_orders[str(event["order_id"])][0]
            self.metrics.on_order(orders_before, t, last_before, total, state.first_order_at)
        else:
            self.counters["duplicate_orders"] += 1

    def _score_features(self, state: CustomerState, features: dict[str, Any]) -> dict[str, Any]:
        sc = state.scores
        return {"churn_risk": sc.get("churn_risk"), "abandon_risk": sc.get("abandon_risk"),
                "clv": sc.get("clv", features["clv_simple"])}

    def _score(self, state: CustomerState, features: dict[str, Any], now: float) -> None:
        if self.scorer is not None:
            state.scores = self.scorer.score(state.key, state, features, now)
        features.update(self._score_features(state, features))

    def _advance_customer(self, state: CustomerState, until: float) -> list[dict]:
        out: list[dict] = []
        steps = 0
        timeout = self.config.session_timeout
        while state.due_at is not None and state.due_at <= until and steps < _MAX_TIMER_STEPS:
            steps += 1
            t = state.due_at
            now = t if state.local_time is None or t > state.local_time else state.local_time
            state.local_time = now
            closed = None
            sess = state.session
            if sess is not None and sess["last_at"] + timeout <= now:
                closed = close_session(state, sess["last_at"] + timeout, ordered=False)
            features = customer_features(state, now, self.config)
            if self.scorer is not None:
                if closed is not None:
                    self.scorer.on_session_end(state.key, state, closed, now)
                self.scorer.on_time(state.key, state, features, now)
            self._score(state, features, now)
            self.counters["timers_fired"] += 1
            touched = _NOTHING if closed is None else _SESSION_ONLY
            looks = self._needs_look(state, touched, now)
            out += self._evaluate(state, features, now, "timer", None, looks)
            self._schedule(state, features, now, looks)
        return out

    def _needs_look(self, state: CustomerState, touched: frozenset[str], now: float) -> list[SegmentDef]:
        """The segments whose decision may have changed: a group they read was touched,
        or their due time has come."""
        if self.full_evaluation or touched is ALL_GROUPS:
            return list(self._segments)
        if self.scorer is not None:
            touched = touched | {"scores"}
        looks = self._by_groups.get(touched)
        if looks is None:
            looks = self._by_groups[touched] = [s for s in self._segments if s.groups & touched]
        due = [name for name, t in state.seg_due.items() if t <= now]
        if not due:
            return looks
        return [s for s in self._segments if s in looks or s.name in due]

    def _evaluate(self, state: CustomerState, features: dict[str, Any], now: float,
                  trigger: str, cause: str | None, looks: list[SegmentDef]) -> list[dict]:
        members = state.segments
        entered: list[SegmentDef] = []
        exited: list[SegmentDef] = []
        for seg in looks:
            since = members.get(seg.name)
            if since is None:
                if seg.enter(features):
                    entered.append(seg)
            elif now - since >= seg.min_dwell and seg.exit(features):
                exited.append(seg)
        if not entered and not exited:
            return []
        previous = sorted(members)
        for seg in exited:
            del members[seg.name]
            state.left_at[seg.name] = now
        for seg in entered:
            members[seg.name] = now
        current = sorted(members)
        out = [self._change(state, seg, "exited", features, now, trigger, cause, previous, current)
               for seg in exited]
        out += [self._change(state, seg, "entered", features, now, trigger, cause, previous, current)
                for seg in entered]
        return out

    def _change(self, state: CustomerState, seg: SegmentDef, change: str, features: dict[str, Any],
                now: float, trigger: str, cause: str | None, previous: list[str],
                current: list[str]) -> dict[str, Any]:
        rule = seg.enter if change == "entered" else seg.exit
        version = self.catalog.definition_version
        at = format_time(now)
        eid = change_id(state.key, seg.name, change, cause or at, version)
        scores = state.scores
        reasons = scores.get("reasons") or {}
        driver_models = seg.drivers or tuple(n for n in ("churn_risk", "abandon_risk") if n in rule.names)
        drivers = [d for m in driver_models for d in reasons.get(m, ())][:5]
        self.counters["changes"] += 1
        self.counters[f"{change}:{seg.name}"] += 1
        state.recent_changes.append([at, seg.name, change, eid])
        if len(state.recent_changes) > RECENT_CHANGES_KEPT:
            del state.recent_changes[0]
        return {
            "event_id": eid,
            "type": "segment_changed",
            "schema_version": SCHEMA_VERSION,
            "customer_id": state.key,
            "anonymous": state.anonymous,
            "segment": seg.name,
            "change": change,
            "at": at,
            "previous_segments": previous,
            "segments": current,
            "reason": {
                "rule": rule.text,
                "condition": "enter" if change == "entered" else "exit",
                "values": {n: _round(features.get(n)) for n in sorted(rule.names)},
                "drivers": drivers,
            },
            "scores": {
                "churn_risk": _round(features.get("churn_risk")),
                "abandon_risk": _round(features.get("abandon_risk")),
                "clv": _round(features.get("clv")),
                "clv_historical": _round(features["clv_historical"]),
            },
            "cause_event_id": cause,
            "trigger": trigger,
            "definition_version": version,
            "model_versions": dict(self.scorer.versions) if self.scorer is not None else {},
            "holdout": in_holdout(state.key, seg.name, seg.holdout_percent),
        }

    def _schedule(self, state: CustomerState, features: dict[str, Any], now: float,
                  looks: list[SegmentDef]) -> None:
        """Compute the key's next due time and file it in the index."""
        due = session_due(state, self.config.session_timeout)
        if self.scorer is not None:
            t = self.scorer.next_due(state.key, state, now)
            if t is not None and (due is None or t < due):
                due = t
        anchors = time_anchors(state)
        members = state.segments
        seg_due = state.seg_due
        for seg in looks:
            since = members.get(seg.name)
            if since is None:
                t = seg.due_time(seg.enter, features, anchors, now)
            elif now - since < seg.min_dwell and seg.exit(features):
                t = since + seg.min_dwell
            else:
                t = seg.due_time(seg.exit, features, anchors, now)
            if t is None:
                seg_due.pop(seg.name, None)
            else:
                seg_due[seg.name] = t
        for t in seg_due.values():
            if due is None or t < due:
                due = t
        if due is not None and due <= now:
            due = now + 0.001
        if due != state.due_at:
            state.due_at = due
            if due is not None:
                heapq.heappush(self._heap, (due, state.key))

    def needs_visitor(self, event: dict[str, Any]) -> str | None:
        """The anonymous id whose state this event may link to its customer, when that state
        is not in this engine's store (it lives on another partition): the caller asks that
        partition's engine to ``export_visitor`` it (None there when there is nothing to hand
        over: unknown, or already folded in and not come back since)."""
        anon, cid = event.get("anonymous_id"), event.get("customer_id")
        if not anon or not cid or anon == cid or self.state_of(anon) is not None:
            return None
        return anon

    def export_visitor(self, anon: str, event: dict[str, Any]) -> tuple[list[dict], dict | None]:
        """Hand over an anonymous visitor linked by ``event`` (which carries both ids) to the
        engine of its customer: exits the visitor's segments (reason ``identity_linked``),
        removes its state and returns (changes, state as a dict, or None if unknown)."""
        visitor = self.state_of(anon)
        if visitor is None:
            return [], None
        t = parse_time(event["occurred_at"])
        out = self._exit_linked(visitor, event, t, event["customer_id"])
        self._retire(visitor, event["customer_id"])
        return out, visitor.to_dict()

    def _retire(self, visitor: CustomerState, customer: str) -> None:
        """Replace a linked visitor's state by a marker holding only its source positions,
        the ids of its events and the customer it is linked to."""
        self.store[visitor.key] = CustomerState(key=visitor.key, anonymous=True, retired=True,
                                                positions=dict(visitor.positions),
                                                seen_ids=list(visitor.seen_ids),
                                                linked_to=customer)
        self._dirty.add(visitor.key)

    def _exit_linked(self, visitor: CustomerState, event: dict[str, Any], t: float, to: str) -> list[dict]:
        out: list[dict] = []
        if visitor.segments:
            previous = sorted(visitor.segments)
            features = customer_features(visitor, t, self.config)
            features.update(self._score_features(visitor, features))
            for name in previous:
                seg = self.catalog.segments.get(name)
                if seg is not None:
                    c = self._change(visitor, seg, "exited", features, max(t, visitor.local_time or t),
                                     "event", event["event_id"], previous, [])
                    c["reason"] = {"rule": "identity_linked", "condition": "exit",
                                   "values": {"linked_to": to}, "drivers": []}
                    out.append(c)
        return out

    def _link(self, state: CustomerState, anon: str, event: dict[str, Any], t: float,
              handed_over: dict | None = None) -> list[dict]:
        """Fold an anonymous visitor's state into the customer it turned out to be."""
        if anon in state.aliases:       # linked before; its visitor came back to life here
            state.aliases.remove(anon)
        state.aliases.append(anon)
        del state.aliases[:-ALIASES_KEPT]
        out: list[dict] = []
        if handed_over is not None:
            visitor = CustomerState.from_dict(handed_over)
        else:
            visitor = self.state_of(anon)
            if visitor is None:
                return []
            out = self._exit_linked(visitor, event, t, state.key)
            self._retire(visitor, state.key)
        self._absorb(state, visitor)
        self.counters["identities_linked"] += 1
        return out

    def _absorb(self, state: CustomerState, visitor: CustomerState) -> None:
        if self.scorer is not None and hasattr(self.scorer, "merge_model_data"):
            self.scorer.merge_model_data(state, visitor)
        if state.session is None and visitor.session is not None:
            state.session = visitor.session
        for name in ("sessions", "page_views", "product_views", "searches", "carts_started",
                     "carts_abandoned", "checkouts_started", "events", "abandon_episodes",
                     "items_seen", "discounted_items_seen"):
            setattr(state, name, getattr(state, name) + getattr(visitor, name))
        for name in ("last_abandon_at", "last_event_at", "last_cart_end"):
            a, b = getattr(state, name), getattr(visitor, name)
            setattr(state, name, b if a is None else a if b is None else max(a, b))
        if visitor.first_seen_at is not None and (state.first_seen_at is None or visitor.first_seen_at < state.first_seen_at):
            state.first_seen_at = visitor.first_seen_at
        if visitor.last_abandon_at is not None and state.last_abandon_at == visitor.last_abandon_at:
            state.abandoned_cart_value = visitor.abandoned_cart_value
        state.seen_ids.extend(i for i in visitor.seen_ids if i not in state.seen_ids)
        del state.seen_ids[:-64]

    def _erase(self, key: str, event: dict[str, Any], t: float) -> list[dict]:
        """Data-protection erasure: drop the key's state (and its linked visitors')."""
        state = self.state_of(key)
        previous = sorted(state.segments) if state is not None else []
        keys = [key] + (list(state.aliases) if state is not None else [])
        for k in keys:
            if k in self.store:
                del self.store[k]
            self._dirty.add(k)
        self.counters["erasures"] += 1
        version = self.catalog.definition_version
        return [{
            "event_id": change_id(key, "", "forgotten", event["event_id"], version),
            "type": "customer_forgotten",
            "schema_version": SCHEMA_VERSION,
            "customer_id": key,
            "anonymous": state.anonymous if state is not None else event.get("customer_id") is None,
            "segment": None,
            "change": "forgotten",
            "at": format_time(t if state is None or state.local_time is None else max(t, state.local_time)),
            "previous_segments": previous,
            "segments": [],
            "reason": {"rule": "erasure_requested", "condition": "erasure", "values": {}, "drivers": []},
            "scores": {"churn_risk": None, "abandon_risk": None, "clv": None, "clv_historical": None},
            "cause_event_id": event["event_id"],
            "trigger": "erasure",
            "definition_version": version,
            "model_versions": dict(self.scorer.versions) if self.scorer is not None else {},
            "holdout": False,
        }]
