"""Live model quality over the model hubs of one worker (one hub per partition).

Each partition's :class:`~models.scoring.ModelHub` measures its models on the labels of its
own customers (:class:`~models.scoring.LiveMetrics`). The worker's view adds them up exactly
where the metric allows it: ROC AUC from the summed score histograms (the same binned AUC
each hub computes), log loss, Brier and mean label delay weighted by label counts,
calibration (ECE) from the summed reliability bins, label and drift counts summed. A
rolling AUC cannot be added up: the view gives the label-weighted mean of the partitions'
rolling AUCs (``rolling_auc``) and each partition's own value.

>>> from models.scoring import LiveMetrics
>>> a, b = LiveMetrics(), LiveMetrics()
>>> for y, p in [(1, 0.9), (0, 0.2)]: _ = a.update(y, p)
>>> for y, p in [(1, 0.3), (0, 0.6)]: _ = b.update(y, p)
>>> m = merge_metrics([a, b])
>>> m["labels"], m["auc"], m["positive_rate"]
(4, 0.75, 0.5)
"""

from __future__ import annotations

from typing import Any

from models.scoring.metrics import LiveMetrics, binned_auc, expected_calibration_error

__all__ = ["MODEL_ATTRS", "merge_metrics", "model_report"]

#: model name (as in ``ModelHub.versions`` / ``describe()``) -> hub attribute
MODEL_ATTRS = {"churn_risk": "churn", "abandon_risk": "abandon"}


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    num = den = 0.0
    for v, n in pairs:
        if v is not None and n:
            num += v * n
            den += n
    return num / den if den else None


def merge_metrics(metrics: list[LiveMetrics]) -> dict[str, Any]:
    """One summary (the keys of ``LiveMetrics.summary()``) over several ``LiveMetrics``."""
    ms = [m for m in metrics if m is not None]
    n = sum(m.n for m in ms)
    if not n:
        return {"labels": 0, "positive_rate": None, "auc": None, "rolling_auc": None,
                "log_loss": None, "brier": None, "ece": None, "mean_delay_days": None,
                "drifts": sum(m.drifts for m in ms), "partitions_with_labels": 0}
    same_bins = len({m.bins for m in ms}) == 1 and len({m.calibration_bins for m in ms}) == 1
    auc = ece = None
    if same_bins:
        pos = [sum(col) for col in zip(*(m.pos for m in ms))]
        neg = [sum(col) for col in zip(*(m.neg for m in ms))]
        auc = binned_auc(pos, neg)
        ece = expected_calibration_error([sum(c) for c in zip(*(m.cal_count for m in ms))],
                                         [sum(c) for c in zip(*(m.cal_p for m in ms))],
                                         [sum(c) for c in zip(*(m.cal_y for m in ms))])
    summaries = [(m, m.summary()) for m in ms if m.n]
    return {
        "labels": n,
        "positive_rate": sum(m.positives for m in ms) / n,
        "auc": auc,
        "rolling_auc": _weighted([(s["rolling_auc"], m.n) for m, s in summaries]),
        "log_loss": _weighted([(s["log_loss"], m.n) for m, s in summaries]),
        "brier": sum(m.sq_err for m in ms) / n,
        "ece": ece,
        "mean_delay_days": sum(m.delay_sum for m in ms) / n / 86400.0,
        "drifts": sum(m.drifts for m in ms),
        "partitions_with_labels": len(summaries),
    }


def model_report(hubs: dict[int, Any]) -> dict[str, Any]:
    """``{"models": {name: {...merged, "versions": {partition: version}}}, "by_partition":
    {partition: describe()}}`` for ``{partition: hub}``."""
    per_partition: dict[str, Any] = {}
    metrics: dict[str, list[LiveMetrics]] = {}
    versions: dict[str, dict[str, str]] = {}
    summaries: dict[str, list[dict]] = {}
    for p, hub in sorted(hubs.items()):
        try:
            d = hub.describe()
        except Exception as exc:  # noqa: BLE001 - a view must not fail on a model
            per_partition[str(p)] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        per_partition[str(p)] = d
        for name, version in (d.get("versions") or {}).items():
            versions.setdefault(name, {})[str(p)] = version
        for name, part in d.items():
            if not (isinstance(part, dict) and isinstance(part.get("metrics"), dict)):
                continue
            live = getattr(getattr(hub, MODEL_ATTRS.get(name, name), None), "metrics", None)
            if isinstance(live, LiveMetrics):
                metrics.setdefault(name, []).append(live)
            else:
                summaries.setdefault(name, []).append(part["metrics"])
    models: dict[str, Any] = {}
    for name in sorted(set(metrics) | set(summaries)):
        if name in metrics:
            merged = merge_metrics(metrics[name])
        else:   # only summaries: label-weighted means, no exact AUC
            rows = summaries[name]
            n = sum(r.get("labels") or 0 for r in rows)
            merged = {"labels": n, **{k: _weighted([(r.get(k), r.get("labels") or 0)
                                                    for r in rows])
                                      for k in ("auc", "rolling_auc", "log_loss", "brier",
                                                "ece", "positive_rate")},
                      "drifts": sum(r.get("drifts") or 0 for r in rows)}
        merged["versions"] = versions.get(name, {})
        models[name] = merged
    for name, vs in versions.items():
        models.setdefault(name, {"versions": vs})
    return {"models": models, "by_partition": per_partition}
