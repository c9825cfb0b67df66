"""BG/NBD and Gamma-Gamma (models/scoring/btyd.py) and the live metrics (metrics.py)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy import stats
from river import metrics as river_metrics

from models.clock import DAY
from models.scoring.btyd import (DEFAULT_BGNBD, DEFAULT_GAMMA_GAMMA, BGNBDParams,
                                 GammaGammaParams, _expected_purchases_quadrature,
                                 expected_purchases, expected_purchases_new, expected_spend,
                                 fit_bgnbd, fit_gamma_gamma, p_alive, prob_no_purchase)
from models.scoring.metrics import LiveMetrics
from models.scoring.population import Population


def draw_bgnbd(params: BGNBDParams, n: int, rng: np.random.Generator, t_max: float = 365.0):
    """Customers drawn from the BG/NBD story: (x, t_x, T) rows."""
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    T = rng.uniform(t_max / 4, t_max, n)
    rows = []
    for i in range(n):
        t, x, t_x = 0.0, 0, 0.0
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > T[i]:
                break
            x, t_x = x + 1, t
            if rng.random() < p[i]:
                break
        rows.append((x, t_x, T[i]))
    return rows


def test_bgnbd_fit_recovers_known_parameters():
    true = BGNBDParams(r=0.6, alpha=20.0, a=0.8, b=2.5)
    rows = draw_bgnbd(true, 6000, np.random.default_rng(1))
    fit = fit_bgnbd(rows)
    assert fit.r == pytest.approx(true.r, rel=0.15)
    assert fit.alpha == pytest.approx(true.alpha, rel=0.2)
    assert fit.a == pytest.approx(true.a, rel=0.3)
    assert fit.b == pytest.approx(true.b, rel=0.3)
    # warm start from the answer stays there
    again = fit_bgnbd(rows, init=fit)
    assert again.r == pytest.approx(fit.r, rel=1e-3)


def test_bgnbd_expectations_match_simulation_and_quadrature():
    params = BGNBDParams(r=0.6, alpha=20.0, a=0.8, b=2.5)
    for x, t_x, T in [(0, 0.0, 100.0), (3, 80.0, 100.0), (40, 300.0, 310.0), (2, 5.0, 300.0)]:
        for t in (90.0, 365.0):
            closed = expected_purchases(params, x, t_x, T, t)
            assert closed == pytest.approx(_expected_purchases_quadrature(params, x, t_x, T, t), rel=1e-6)
    # a new customer's expected purchases match a Monte Carlo of the model
    rng = np.random.default_rng(2)
    n = 40000
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    counts = np.zeros(n)
    alive = np.ones(n, bool)
    t = np.zeros(n)
    while alive.any():
        t[alive] += rng.exponential(1 / lam[alive])
        buy = alive & (t <= 180.0)
        counts[buy] += 1
        alive = buy & (rng.random(n) >= p)
    assert expected_purchases_new(params, 180.0) == pytest.approx(counts.mean(), rel=0.05)
    assert expected_purchases(params, 0, 0.0, 0.0, 180.0) == pytest.approx(counts.mean(), rel=0.05)


def test_p_alive_and_no_purchase_behave():
    params = BGNBDParams(r=0.6, alpha=20.0, a=0.8, b=2.5)
    assert p_alive(params, 0, 0.0, 50.0) == 1.0
    recent, lapsed = p_alive(params, 5, 99.0, 100.0), p_alive(params, 5, 10.0, 100.0)
    assert 0 < lapsed < recent <= 1
    assert prob_no_purchase(params, 5, 99.0, 100.0, 90.0) < prob_no_purchase(params, 5, 10.0, 100.0, 90.0)
    arr = prob_no_purchase(params, np.array([5, 5]), np.array([99.0, 10.0]), np.array([100.0, 100.0]), 90.0)
    assert arr.shape == (2,) and np.all((0 < arr) & (arr < 1))


def test_gamma_gamma_fit_recovers_known_parameters():
    true = GammaGammaParams(p=6.0, q=4.0, v=15.0)
    rng = np.random.default_rng(3)
    n = 5000
    nu = rng.gamma(true.q, 1 / true.v, n)
    x = rng.integers(1, 10, n)
    m = np.array([rng.gamma(true.p, 1 / nu[i], x[i]).mean() for i in range(n)])
    fit = fit_gamma_gamma(x, m)
    assert fit.p == pytest.approx(true.p, rel=0.2)
    assert fit.q == pytest.approx(true.q, rel=0.2)
    assert fit.v == pytest.approx(true.v, rel=0.3)
    # expected spend: the population mean with no history, towards the own mean with more
    pop = expected_spend(fit, 0, 0.0)
    assert pop == pytest.approx(fit.population_mean)
    assert pop < expected_spend(fit, 2, 100.0) < expected_spend(fit, 20, 100.0) < 100.0


def test_population_sample_is_bounded_deterministic_and_refits():
    a, b = Population(size=50, min_customers=10), Population(size=50, min_customers=10)
    keys = [f"c{i}" for i in range(400)]
    for k in keys:
        a.observe(k, 0.0, 86400.0 * 30, 3, 20.0)
    for k in reversed(keys):
        b.observe(k, 0.0, 86400.0 * 30, 3, 20.0)
    assert len(a) == 50 and set(a._rows) == set(b._rows)       # same sample in any order
    assert a.maybe_refit(86400.0 * 100) and a.refits == 1
    assert not a.maybe_refit(86400.0 * 101)                    # not due yet


def _rank_auc(ys, ps) -> float:
    r = stats.rankdata(ps)
    n1, n0 = ys.sum(), (~ys).sum()
    return float((r[ys].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_live_metrics_match_river_metrics():
    rng = np.random.default_rng(4)
    ys = rng.random(300) < 0.4
    ps = np.clip(0.4 + 0.3 * (ys - 0.4) + rng.normal(0, 0.2, 300), 0.001, 0.999)
    live, live_small = LiveMetrics(bins=1000, window=1000), LiveMetrics(window=100)
    logloss, mse = river_metrics.LogLoss(), river_metrics.MSE()
    rolling, rolling_all = river_metrics.RollingROCAUC(window_size=100), river_metrics.RollingROCAUC(1000)
    for y, p in zip(ys, ps):
        live.update(bool(y), float(p), delay=3600.0)
        live_small.update(bool(y), float(p))
        logloss.update(bool(y), float(p))
        mse.update(float(y), float(p))
        rolling.update(bool(y), float(p))
        rolling_all.update(bool(y), float(p))
    s = live.summary()
    assert s["labels"] == 300
    assert s["rolling_auc"] == pytest.approx(rolling_all.get())
    assert live_small.summary()["rolling_auc"] == pytest.approx(rolling.get())
    assert s["auc"] == pytest.approx(rolling_all.get(), abs=2e-3)    # binned: within 1/bins
    assert s["log_loss"] == pytest.approx(logloss.get())
    assert s["brier"] == pytest.approx(mse.get())
    assert s["mean_delay_days"] == pytest.approx(1 / 24)
    bins = np.minimum((ps * 10).astype(int), 9)
    ece = sum(abs(ps[bins == k].sum() - ys[bins == k].sum()) for k in range(10)) / len(ps)
    assert s["ece"] == pytest.approx(ece)


def test_binned_auc_is_exact_on_the_grid_with_ties_as_half():
    # River's RollingROCAUC counts a tie between a positive and a negative as 0; the usual
    # (Mann-Whitney) AUC counts it 1/2, as the binned overall AUC does.
    rng = np.random.default_rng(6)
    ys = rng.random(500) < 0.3
    ps = np.clip(0.3 + 0.4 * (ys - 0.3) + rng.normal(0, 0.2, 500), 0.0, 1.0).round(3)
    live = LiveMetrics(bins=1000)
    for y, p in zip(ys, ps):
        live.update(bool(y), float(p))
    assert live.summary()["auc"] == pytest.approx(_rank_auc(ys, ps), abs=1e-12)


def test_adwin_flags_a_change_in_error():
    live = LiveMetrics()
    rng = np.random.default_rng(5)
    for _ in range(1500):                      # a good model
        y = rng.random() < 0.5
        live.update(y, 0.9 if y else 0.1)
    assert live.drifts == 0
    for _ in range(1500):                      # the world flips
        y = rng.random() < 0.5
        live.update(y, 0.1 if y else 0.9)
    assert live.drifts >= 1 and live.summary()["last_drift_at_label"] > 1500
    assert math.isfinite(live.summary()["log_loss"])


def _early_population(min_history_days: float = 14.0) -> Population:
    """60 customers whose first orders fall in the first 3 days, half of them back once."""
    pop = Population(size=100, min_customers=10, min_history_days=min_history_days)
    for i in range(60):
        first = DAY * (i % 4) * 0.75
        again = i % 2 == 0
        pop.observe(f"c{i}", first, first + (DAY if again else 0.0), 2 if again else 1,
                    20.0 + i)
    return pop


def test_bgnbd_keeps_its_prior_until_the_population_has_seen_min_history_days():
    pop = _early_population()
    assert pop.maybe_refit(5 * DAY) and pop.refits == 1
    assert pop.bgnbd == DEFAULT_BGNBD                           # 5 days of orders: the prior
    assert pop.gamma_gamma != DEFAULT_GAMMA_GAMMA               # spend is refit at once
    assert pop.describe()["bgnbd_source"] == "prior (CDNOW)"
    assert pop.history_days(5 * DAY) == pytest.approx(5.0)
    assert not pop.maybe_refit(11 * DAY)                        # not due (weekly)
    assert pop.maybe_refit(12 * DAY) and pop.bgnbd == DEFAULT_BGNBD   # 12 days: still the prior
    assert pop.maybe_refit(19 * DAY) and pop.bgnbd != DEFAULT_BGNBD   # 19 days: fitted
    assert pop.describe()["bgnbd_source"] == "fit" and pop.refits == 3


def test_bgnbd_min_history_off_and_batch_rows_fit_at_once():
    pop = _early_population(min_history_days=0.0)
    assert pop.maybe_refit(5 * DAY) and pop.bgnbd != DEFAULT_BGNBD
    batch = _early_population()
    batch.refit(batch.summaries(5 * DAY))                       # a batch job's rows: no `now`
    assert batch.bgnbd != DEFAULT_BGNBD and batch.describe()["bgnbd_source"] == "fit"


def test_population_from_an_older_snapshot_fits_as_before():
    old = _early_population()
    for name in ("since", "min_history", "bgnbd_fits"):         # what older pickles lack
        delattr(old, name)
    pop = pickle.loads(pickle.dumps(old))
    pop.observe("late", 4 * DAY, 4 * DAY, 1, 30.0)
    assert pop.maybe_refit(5 * DAY) and pop.bgnbd != DEFAULT_BGNBD
    assert pop.describe()["bgnbd_source"] == "fit"
