"""An online logistic regression with per-customer explanations.

``StandardScaler | LogisticRegression`` from River over a fixed list of numeric features.
The explanation of a score is linear and exact in log-odds: the contribution of feature
``i`` is ``w_i * z_i`` where ``z_i`` is the feature standardised by the scaler's running
mean and standard deviation, so the contributions plus the intercept add up to the logit
of the model's probability. A positive contribution pushes the probability up relative to
an average customer (z = 0).

>>> m = OnlineLogit(["a", "b"], lr=0.1)
>>> for i in range(200):
...     m.learn({"a": i % 2, "b": 0.5}, i % 2 == 1)
>>> m.proba({"a": 1, "b": 0.5}) > 0.8 > 0.2 > m.proba({"a": 0, "b": 0.5})
True
>>> [c["feature"] for c in m.contributions({"a": 1, "b": 0.5})][:1]
['a']
"""

from __future__ import annotations

import math
from typing import Sequence

from river import linear_model, optim, preprocessing

__all__ = ["DecayingRate", "OffsetLogisticRegression", "OnlineLogit", "logit", "sigmoid"]


def logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class DecayingRate(optim.base.Scheduler):
    """``lr / (t + 1) ** power``, never below ``floor``: large steps while the first labels
    come in, small ones once the model has seen many (plain SGD with a constant rate keeps
    jumping around the optimum), and a floor so that it still follows a drifting world.

    >>> r = DecayingRate(0.1, 0.5, 0.001)
    >>> r.get(0), round(r.get(99), 4), r.get(10**8)
    (0.1, 0.01, 0.001)
    """

    def __init__(self, learning_rate: float, power: float = 0.5, floor: float = 0.0) -> None:
        self.learning_rate = learning_rate
        self.power = power
        self.floor = floor

    def get(self, t: int) -> float:
        return max(self.floor, self.learning_rate / math.pow(t + 1, self.power))


class OffsetLogisticRegression(linear_model.LogisticRegression):
    """River's logistic regression with a per-example offset added to its log-odds: a prior
    the model starts from (all weights 0: the prior itself) and learns corrections to."""

    _offset = 0.0

    def _raw_dot_one(self, x: dict) -> float:
        return self._weights.dot(x) + self.intercept + self._offset

    def learn_with_offset(self, x: dict, y: bool, offset: float) -> None:
        self._offset = offset
        try:
            self.learn_one(x, y)
        finally:
            del self._offset

    def proba_with_offset(self, x: dict, offset: float) -> float:
        self._offset = offset
        try:
            return self.predict_proba_one(x)[True]
        finally:
            del self._offset


class OnlineLogit:
    """Scaler + logistic regression learned one labelled example at a time.

    ``lr_decay`` > 0 makes the learning rate (weights and intercept) decay as
    ``lr / (t + 1) ** lr_decay`` down to ``lr_floor`` (``DecayingRate``); 0 keeps it constant.

    ``offset_feature`` names an input already in log-odds (a prior's logit) that enters the
    model with a fixed weight of 1 instead of a learned one: the untrained model *is* that
    prior, and learning only moves it where the labels disagree. Its contribution in an
    explanation is its value minus its running mean.

    >>> m = OnlineLogit(["prior", "a"], lr=0.05, offset_feature="prior")
    >>> round(m.proba({"prior": 2.0, "a": 1.0}), 3)      # untrained: sigmoid(2)
    0.881
    """

    def __init__(self, feature_names: Sequence[str], lr: float = 0.02, l2: float = 1e-4,
                 intercept_lr: float = 0.02, lr_decay: float = 0.0, lr_floor: float = 0.0,
                 offset_feature: str | None = None) -> None:
        self.feature_names = tuple(feature_names)
        self.offset_feature = offset_feature
        self.scaler = preprocessing.StandardScaler()
        rate: float | optim.base.Scheduler = lr
        intercept_rate: float | optim.base.Scheduler = intercept_lr
        if lr_decay > 0:
            rate = DecayingRate(lr, lr_decay, lr_floor)
            intercept_rate = DecayingRate(intercept_lr, lr_decay, lr_floor)
        cls = OffsetLogisticRegression if offset_feature else linear_model.LogisticRegression
        self.model = cls(optimizer=optim.SGD(rate), l2=l2, intercept_lr=intercept_rate)
        self.n_learned = 0
        self._w: dict[str, float] | None = None     # cache of the weights as a plain dict

    def learn(self, x: dict[str, float], y: bool) -> None:
        self.scaler.learn_one(x)
        z = self.scaler.transform_one(x)
        off = getattr(self, "offset_feature", None)      # absent in snapshots before it
        if off:
            del z[off]
            self.model.learn_with_offset(z, bool(y), x[off])
        else:
            self.model.learn_one(z, bool(y))
        self.n_learned += 1
        self._w = None

    def explain(self, x: dict[str, float]) -> tuple[float, list[tuple[float, str]]]:
        """The probability and the ``(w_i * z_i, feature)`` contributions, in one pass.

        Same arithmetic as ``predict_proba_one(scaler.transform_one(x))`` without River's
        per-call dict copies and without touching the scaler's defaultdicts (pure).
        """
        w = self._w
        if w is None:
            w = self._w = self.model.weights
        means, vars_ = self.scaler.means, self.scaler.vars
        logit_ = self.model.intercept
        contribs = []
        off = getattr(self, "offset_feature", None)
        for f in self.feature_names:
            if f == off:
                logit_ += x[f]
                contribs.append((x[f] - means.get(f, 0.0), f))
                continue
            v = vars_.get(f, 0.0)
            z = (x[f] - means.get(f, 0.0)) / v ** 0.5 if v else 0.0
            c = w.get(f, 0.0) * z
            logit_ += c
            contribs.append((c, f))
        return sigmoid(logit_), contribs

    def proba(self, x: dict[str, float]) -> float:
        return self.explain(x)[0]

    def contributions(self, x: dict[str, float], top: int | None = None) -> list[dict]:
        """``w_i * z_i`` per feature (log-odds), largest magnitude first."""
        _p, contribs = self.explain(x)
        contribs.sort(key=lambda c: -abs(c[0]))
        if top is not None:
            contribs = contribs[:top]
        return [{"feature": f, "value": x.get(f), "contribution": c} for c, f in contribs]

    @property
    def intercept(self) -> float:
        """The log-odds of an average input (all contributions 0): the model's intercept, plus
        the running mean of the offset feature when there is one."""
        off = getattr(self, "offset_feature", None)
        return self.model.intercept + (self.scaler.means.get(off, 0.0) if off else 0.0)

    def river_proba(self, x: dict[str, float]) -> float:
        """The same probability computed by River itself (a cross-check of ``explain``)."""
        z = self.scaler.transform_one(x)
        off = getattr(self, "offset_feature", None)
        if off:
            del z[off]
            return self.model.proba_with_offset(z, x[off])
        return self.model.predict_proba_one(z)[True]
