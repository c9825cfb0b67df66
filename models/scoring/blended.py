"""A binary model learned from delayed labels, with a prior for the cold start.

The served probability is ``w * p_model + (1 - w) * p_prior`` with
``w = min(1, labels learned / warmup_labels)``: the prior alone before the first label,
a linear hand-over, the learned model alone from ``warmup_labels`` labels on. The reason is
the learned model's ``w_i * z_i`` contributions once ``w >= 0.5``, the prior's own reason
before. Quality is measured on the probability that was served, when its label arrives.
"""

from __future__ import annotations

from typing import Callable

from .encoding import Encoder, compact
from .linear import OnlineLogit
from .metrics import LiveMetrics

__all__ = ["BlendedClassifier"]


class BlendedClassifier:
    def __init__(self, name: str, encoder: Encoder, warmup_labels: int = 200,
                 lr: float = 0.02, l2: float = 1e-4, top_reasons: int = 3,
                 metrics_window: int = 1000, lr_decay: float = 0.0, lr_floor: float = 0.0,
                 offset_feature: str | None = None) -> None:
        self.name = name
        self.encoder = encoder
        self.warmup_labels = warmup_labels
        self.top_reasons = top_reasons
        self.learner = OnlineLogit(encoder.names, lr=lr, l2=l2, intercept_lr=lr,
                                   lr_decay=lr_decay, lr_floor=lr_floor,
                                   offset_feature=offset_feature)
        self.metrics = LiveMetrics(window=metrics_window)
        self.stale_labels = 0        # labels whose inputs were recorded under another encoding

    @property
    def labels(self) -> int:
        return self.learner.n_learned

    @property
    def weight(self) -> float:
        if self.warmup_labels <= 0:
            return 1.0
        return min(1.0, self.learner.n_learned / self.warmup_labels)

    @property
    def version(self) -> str:
        return f"{self.name}/{self.encoder.version}/{self.learner.n_learned}"

    def predict(self, x: dict[str, float], prior: float,
                prior_reasons: Callable[[], list[dict]]) -> tuple[float, list[dict], str]:
        """Return ``(probability, reasons, method)``; never mutates the model.

        ``prior_reasons`` is called only when the prior's reason is the one given.
        """
        w = self.weight
        if w <= 0.0:
            return _clip(prior), prior_reasons(), "prior"
        p_model, contribs = self.learner.explain(x)
        p = w * p_model + (1.0 - w) * prior
        if w >= 0.5:
            top = sorted((-abs(c), c, f) for c, f in contribs)[:self.top_reasons]
            reasons = [{"feature": f, "value": self.encoder.display(f, x[f]), "contribution": round(c, 4)}
                       for _, c, f in top]
            method = "logreg" if w >= 1.0 else "logreg+prior"
        else:
            reasons, method = prior_reasons(), "prior+logreg"
        return _clip(p), reasons, method

    def record(self, t: float, p: float, x: dict[str, float]) -> list:
        """A pending prediction as stored in ``model_data``: ``[t, p, [inputs...]]``."""
        return [t, compact(p), [compact(v) for v in self.encoder.pack(x)]]

    def learn(self, pending: list, version: str, y: bool, resolved_at: float) -> bool:
        """Teach one label with the inputs of the prediction; update the live metrics."""
        t, p, packed = pending
        if version != self.encoder.version or len(packed) != len(self.encoder.names):
            self.stale_labels += 1
            return False
        self.metrics.update(y, p, delay=resolved_at - t)
        self.learner.learn(self.encoder.decode(packed), bool(y))
        return True

    def describe(self) -> dict:
        return {"version": self.version, "labels": self.labels, "model_weight": self.weight,
                "warmup_labels": self.warmup_labels, "stale_labels": self.stale_labels,
                "intercept": self.learner.intercept,
                "weights": {k: round(v, 4) for k, v in self.learner.model.weights.items()},
                "metrics": self.metrics.summary()}


def _clip(p: float) -> float:
    return min(max(float(p), 1e-4), 1.0 - 1e-4)
