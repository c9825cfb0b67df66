"""The topic catalogue: every topic the system reads or writes, with its key and policy.

All topics have the same partition count (``RETENTION_PARTITIONS``) and are keyed by the
customer key (``customer_id`` or ``anonymous_id``), so partition *p* of every input topic,
the clock topic and every table changelog holds the same customers (co-partitioning). The
embedded broker cannot add partitions: topics are created with their final count.
Documented in ``docs/TOPICS.md``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CLOCK_TOPIC", "INPUT_TOPICS", "SEGMENT_CHANGES", "TABLE_CUSTOMERS", "TABLE_MODELS",
           "TopicSpec", "catalogue", "changelog_topic", "dlq_topic",
           "segment_names", "segment_topic", "topic_for_event_type"]

CLICKSTREAM = "shop.clickstream"
ORDERS = "shop.orders"
FEEDBACK = "shop.feedback"
#: input topics; any valid event type is accepted on any of them (routing is a producer
#: convention, see :func:`topic_for_event_type`)
INPUT_TOPICS: tuple[str, ...] = (CLICKSTREAM, ORDERS, FEEDBACK)
SEGMENT_CHANGES = "segments.changes"
SEGMENT_PREFIX = "segments."
#: internal event-time clock: ticks that move the watermark of quiet partitions
CLOCK_TOPIC = "retention.clock"

TABLE_CUSTOMERS = "customers"
TABLE_MODELS = "models"

DAY_MS = 86_400_000

_ORDER_TYPES = {"order_completed", "order_refunded", "order_cancelled", "checkout_started",
                "checkout_step"}
_FEEDBACK_TYPES = {"review_submitted", "support_ticket", "delivery_issue"}


def dlq_topic(topic: str) -> str:
    """``shop.orders`` -> ``shop.orders.dlq``."""
    return f"{topic}.dlq"


def segment_topic(segment: str) -> str:
    """``vip`` -> ``segments.vip``."""
    return f"{SEGMENT_PREFIX}{segment}"


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's changelog topic name for a table."""
    return f"{app_id}-{table}-changelog"


def topic_for_event_type(event_type: str) -> str:
    """The producer convention: orders and checkout to ``shop.orders``, feedback to
    ``shop.feedback``, everything else (and unknown types) to ``shop.clickstream``."""
    if event_type in _ORDER_TYPES:
        return ORDERS
    if event_type in _FEEDBACK_TYPES:
        return FEEDBACK
    return CLICKSTREAM


def segment_names() -> list[str]:
    """Names of the segments in the catalogue (``models/segments.toml``)."""
    try:  # the domain's own loader when it is there
        from models.segments import load_catalog  # type: ignore[attr-defined]

        cat = load_catalog()
        names = getattr(cat, "names", None)
        if callable(names):
            return list(names())
        if names is not None:
            return list(names)
        segs = getattr(cat, "segments", cat)
        if isinstance(segs, dict):
            return list(segs)
        return [getattr(s, "name", s) for s in segs]
    except Exception:  # noqa: BLE001 - fall back to reading the file
        pass
    path = Path(__file__).resolve().parent.parent / "models" / "segments.toml"
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text())
    segs = data.get("segments", data.get("segment", {}))
    if isinstance(segs, dict):
        return list(segs)
    return [s["name"] for s in segs if "name" in s]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: str
    cleanup: str  # "delete" or "compact"
    configs: dict[str, str] = field(default_factory=dict)
    internal: bool = False

    def all_configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup, **self.configs}


def catalogue(app_id: str = "retention-scorer", segments: list[str] | None = None,
              ) -> list[TopicSpec]:
    """Every topic, in creation order. Changelog topics are listed so that they can be
    created up front with the right partition count and ``cleanup.policy=compact`` (Faust
    would create them too; creating them first avoids relying on auto-creation)."""
    if segments is None:
        segments = segment_names()
    specs: list[TopicSpec] = []
    for t in INPUT_TOPICS:
        specs.append(TopicSpec(t, "customer key (customer_id or anonymous_id)",
                               "event JSON (schemas/)", "delete",
                               {"retention.ms": str(7 * DAY_MS)}))
    for t in INPUT_TOPICS:
        specs.append(TopicSpec(dlq_topic(t), "original key (raw bytes)",
                               "dead letter JSON (schemas/dead_letter.v1.schema.json)", "delete",
                               {"retention.ms": str(30 * DAY_MS)}))
    specs.append(TopicSpec(SEGMENT_CHANGES, "customer key", "segment_change JSON", "delete",
                           {"retention.ms": str(30 * DAY_MS)}))
    for s in segments:
        specs.append(TopicSpec(segment_topic(s), "customer key", "segment_change JSON",
                               "delete", {"retention.ms": str(30 * DAY_MS)}))
    specs.append(TopicSpec(CLOCK_TOPIC, "none (one tick per partition)",
                           "clock tick JSON {at, source}", "delete",
                           {"retention.ms": str(1 * DAY_MS)}, internal=True))
    specs.append(TopicSpec(changelog_topic(app_id, TABLE_CUSTOMERS), "customer key",
                           "customer record JSON (state + source positions); key NUL+'retention-meta:<p>': "
                           "the partition's engine meta (clock, counters, store metrics)", "compact",
                           internal=True))
    specs.append(TopicSpec(changelog_topic(app_id, TABLE_MODELS), "partition number",
                           "signed model snapshot {blob_b64, versions} (HMAC-SHA256, checked "
                           "before unpickling)", "compact", internal=True))
    return specs
