"""Live quality of a model, measured on labels as they arrive.

One :class:`LiveMetrics` per model. ``update(y, p, delay)`` takes the label, the probability
that was *served* when the prediction was made, and the label delay (seconds). Everything
is bounded in memory:

- overall ROC AUC from score histograms (``bins`` equal-width bins over [0, 1], ties in a
  bin count one half), exact for scores on the bin grid and within ``1 / bins`` otherwise;
- rolling ROC AUC over the last ``window`` labels (``river.metrics.RollingROCAUC``, exact);
- log loss (``river.metrics.LogLoss``), Brier score (mean squared error of the probability);
- expected calibration error over 10 equal-width bins (sum over bins of
  ``n_bin / n * |mean(p) - mean(y)|``) with the reliability table;
- label counts, positive rate, mean label delay;
- an ADWIN drift detector (``river.drift.ADWIN``) fed the per-label squared error.

>>> m = LiveMetrics()
>>> for y, p in [(1, 0.9), (0, 0.2), (1, 0.6), (0, 0.4)]:
...     _ = m.update(y, p, delay=86400.0)
>>> s = m.summary()
>>> s["labels"], s["auc"], round(s["brier"], 4), s["mean_delay_days"]
(4, 1.0, 0.0925, 1.0)
"""

from __future__ import annotations

from river import metrics as river_metrics
from river.drift import ADWIN

__all__ = ["LiveMetrics", "binned_auc", "expected_calibration_error"]

_EPS = 1e-15


def binned_auc(pos: list[int], neg: list[int]) -> float | None:
    """ROC AUC from per-bin positive and negative counts (ties inside a bin count 1/2)."""
    n_pos, n_neg = sum(pos), sum(neg)
    if n_pos == 0 or n_neg == 0:
        return None
    below = 0        # negatives in lower bins
    total = 0.0
    for p_i, n_i in zip(pos, neg):
        total += p_i * (below + 0.5 * n_i)
        below += n_i
    return total / (n_pos * n_neg)


def expected_calibration_error(count: list[int], sum_p: list[float], sum_y: list[float]) -> float | None:
    n = sum(count)
    if n == 0:
        return None
    return sum(abs(sp - sy) for c, sp, sy in zip(count, sum_p, sum_y) if c) / n


class LiveMetrics:
    """Streaming quality metrics of one binary model; small and picklable."""

    def __init__(self, bins: int = 1000, window: int = 1000, calibration_bins: int = 10,
                 adwin_delta: float = 0.002) -> None:
        self.bins = bins
        self.window = window
        self.calibration_bins = calibration_bins
        self.pos = [0] * bins
        self.neg = [0] * bins
        self.cal_count = [0] * calibration_bins
        self.cal_p = [0.0] * calibration_bins
        self.cal_y = [0.0] * calibration_bins
        self.rolling_auc = river_metrics.RollingROCAUC(window_size=window)
        self.log_loss = river_metrics.LogLoss()
        self.n = 0
        self.positives = 0
        self.sq_err = 0.0
        self.delay_sum = 0.0
        self.adwin = ADWIN(delta=adwin_delta)
        self.drifts = 0
        self.last_drift_label: int | None = None

    def update(self, y: int | bool, p: float, delay: float = 0.0) -> bool:
        """Record one label; return True when ADWIN flags a drift on this label."""
        y = int(bool(y))
        p = min(max(float(p), 0.0), 1.0)
        b = min(int(p * self.bins + 1e-9), self.bins - 1)     # a score on the grid is its own bin
        (self.pos if y else self.neg)[b] += 1
        c = min(int(p * self.calibration_bins), self.calibration_bins - 1)
        self.cal_count[c] += 1
        self.cal_p[c] += p
        self.cal_y[c] += y
        self.rolling_auc.update(bool(y), p)
        self.log_loss.update(bool(y), p)
        self.n += 1
        self.positives += y
        err = (y - p) ** 2
        self.sq_err += err
        self.delay_sum += max(delay, 0.0)
        self.adwin.update(err)
        if self.adwin.drift_detected:
            self.drifts += 1
            self.last_drift_label = self.n
            return True
        return False

    def summary(self) -> dict:
        n = self.n
        rolling = self.rolling_auc.get() if n else None
        return {
            "labels": n,
            "positive_rate": self.positives / n if n else None,
            "auc": binned_auc(self.pos, self.neg),
            "rolling_auc": rolling if rolling and 0 < self.positives < n else None,
            "rolling_window": self.window,
            "log_loss": self.log_loss.get() if n else None,
            "brier": self.sq_err / n if n else None,
            "ece": expected_calibration_error(self.cal_count, self.cal_p, self.cal_y),
            "reliability": [
                {"bin": i, "n": c, "mean_p": sp / c, "mean_y": sy / c}
                for i, (c, sp, sy) in enumerate(zip(self.cal_count, self.cal_p, self.cal_y)) if c
            ],
            "mean_delay_days": self.delay_sum / n / 86400.0 if n else None,
            "adwin_error_mean": self.adwin.estimation if n else None,
            "drifts": self.drifts,
            "last_drift_at_label": self.last_drift_label,
        }

