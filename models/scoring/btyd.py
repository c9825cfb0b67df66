"""Buy-till-you-die models: BG/NBD purchase counts and Gamma-Gamma spend.

Pure functions over plain numbers or numpy arrays, fitted by maximum likelihood with
``scipy.optimize`` (no dependency on the unmaintained ``lifetimes`` package). Time is in
whatever unit the summaries use; the scorer uses days.

Notation (Fader, Hardie and Lee 2005, "Counting your customers the easy way"):

- ``x``: repeat purchases (orders - 1),
- ``t_x``: time of the last purchase, measured from the first,
- ``T``: age of the customer (now - first purchase),
- ``t``: length of the future window.

BG/NBD: while alive a customer buys as a Poisson process of rate ``lambda ~ Gamma(r, alpha)``;
after each purchase they drop out with probability ``p ~ Beta(a, b)``.
Gamma-Gamma: a customer's transaction values are ``Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)``.

>>> params = BGNBDParams(r=0.25, alpha=30.0, a=0.8, b=2.4)
>>> round(p_alive(params, x=0, t_x=0.0, T=100.0), 3)
1.0
>>> 0 < expected_purchases(params, x=3, t_x=80.0, T=100.0, t=365.0) < 10
True
>>> 0 < prob_no_purchase(params, x=3, t_x=80.0, T=100.0, t=90.0) < 1
True
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from scipy import optimize, special

__all__ = [
    "BGNBDParams",
    "GammaGammaParams",
    "DEFAULT_BGNBD",
    "DEFAULT_GAMMA_GAMMA",
    "bgnbd_log_likelihood",
    "expected_purchases",
    "expected_purchases_one",
    "expected_purchases_new",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "expected_spend_one",
    "p_alive",
    "p_alive_one",
    "prob_no_purchase",
    "prob_no_purchase_one",
]


@dataclass(frozen=True, slots=True)
class BGNBDParams:
    r: float
    alpha: float
    a: float
    b: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    v: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def population_mean(self) -> float:
        """Mean transaction value of the population, ``p v / (q - 1)`` (needs ``q > 1``)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1.0 else float("nan")


# CDNOW estimates (Fader, Hardie and Lee 2005: r=0.243, alpha=4.414 weeks, a=0.793, b=2.426)
# with alpha converted to days: a sensible population before any refit.
DEFAULT_BGNBD = BGNBDParams(r=0.243, alpha=4.414 * 7.0, a=0.793, b=2.426)
# CDNOW-like spend (Fader, Hardie and Lee 2005b: p=6.25, q=3.74, gamma=15.44), in store currency.
DEFAULT_GAMMA_GAMMA = GammaGammaParams(p=6.25, q=3.74, v=15.44)


def _arrays(*cols):
    return [np.asarray(c, dtype=float) for c in cols]


def bgnbd_log_likelihood(params: BGNBDParams, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood of the BG/NBD model (FHL 2005, eq. 6)."""
    x, t_x, T = _arrays(x, t_x, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
    xs = np.maximum(x, 1.0)
    a3 = special.betaln(a + 1.0, b + xs - 1.0) - special.betaln(a, b) - (r + x) * np.log(alpha + t_x)
    a3 = np.where(x > 0, a3, -np.inf)
    return a1 + np.logaddexp(a2, a3)


def _summary_columns(summaries) -> tuple[np.ndarray, ...]:
    arr = np.asarray(list(summaries) if not isinstance(summaries, np.ndarray) else summaries,
                     dtype=float)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError("summaries must be a non-empty sequence of rows")
    return tuple(arr[:, i] for i in range(arr.shape[1]))


def fit_bgnbd(summaries: Iterable, init: BGNBDParams | None = None,
              penalizer: float = 0.0) -> BGNBDParams:
    """Fit BG/NBD by maximum likelihood from rows ``(x, t_x, T)`` (extra columns ignored).

    Time is rescaled internally so the optimiser works on numbers of order one; ``alpha``
    comes back in the unit of the summaries. ``penalizer`` adds ``penalizer * sum(params**2)``
    (on the rescaled parameters) for small or degenerate samples.
    """
    cols = _summary_columns(summaries)
    x, t_x, T = cols[0], cols[1], cols[2]
    if np.any(x < 0) or np.any(t_x < 0) or np.any(T < t_x):
        raise ValueError("need x >= 0 and 0 <= t_x <= T")
    scale = float(np.mean(T)) or 1.0
    t_xs, Ts = t_x / scale, np.maximum(T / scale, 1e-9)
    if init is None:
        start = np.zeros(4)
    else:
        start = np.log([init.r, init.alpha / scale, init.a, init.b])

    def nll(theta):
        r, al, a, b = np.exp(np.clip(theta, -20, 20))
        ll = bgnbd_log_likelihood(BGNBDParams(r, al, a, b), x, t_xs, Ts)
        val = -float(np.mean(ll)) + penalizer * float(r * r + al * al + a * a + b * b)
        return val if math.isfinite(val) else 1e12

    res = optimize.minimize(nll, start, method="L-BFGS-B",
                            bounds=[(-12.0, 12.0)] * 4)
    if not res.success and init is not None:       # a bad warm start: retry from the origin
        res2 = optimize.minimize(nll, np.zeros(4), method="L-BFGS-B", bounds=[(-12.0, 12.0)] * 4)
        if res2.fun < res.fun:
            res = res2
    r, al, a, b = np.exp(res.x)
    return BGNBDParams(r=float(r), alpha=float(al * scale), a=float(a), b=float(b))


def _expected_purchases_quadrature(params: BGNBDParams, x: float, t_x: float, T: float,
                                   t: float, n: int = 64) -> float:
    """Expected purchases by Gauss-Jacobi quadrature over the dropout probability.

    Given alive, ``lambda ~ Gamma(r + x, alpha + T)`` and ``p ~ Beta(a, b + x)`` independently,
    and ``E[Y(t) | lambda, p] = (1 - exp(-lambda p t)) / p``; integrating ``lambda`` out leaves
    one smooth integral over ``p`` (an independent check of the closed form).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # p = (1 + u) / 2 maps [-1, 1]; the Beta(a, b + x) weight is (1 - u)^(b+x-1) (1 + u)^(a-1)
    u, w = special.roots_jacobi(n, b + x - 1.0, a - 1.0)
    p = (1.0 + u) / 2.0
    f = (1.0 - ((alpha + T) / (alpha + T + p * t)) ** (r + x)) / p
    return float(np.sum(w * f) / np.sum(w)) * p_alive_one(params, x, t_x, T)


def expected_purchases_new(params: BGNBDParams, t):
    """Expected purchases in ``(0, t]`` of a customer just acquired (FHL 2005, eq. 9)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    hyp = special.hyp2f1(r, b, a + b - 1.0, t / (alpha + t))
    return float((a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyp))


def gamma_gamma_log_likelihood(params: GammaGammaParams, frequency, monetary) -> np.ndarray:
    """Per-customer log-likelihood of the mean of ``frequency`` transactions (Fader et al. 2005b)."""
    x, m = _arrays(frequency, monetary)
    p, q, v = params.p, params.q, params.v
    return (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q)
            + q * np.log(v) + (p * x - 1.0) * np.log(m) + p * x * np.log(x)
            - (p * x + q) * np.log(x * m + v))


def fit_gamma_gamma(frequency, monetary, init: GammaGammaParams | None = None,
                    penalizer: float = 0.0) -> GammaGammaParams:
    """Fit Gamma-Gamma spend from each customer's number of transactions and mean value.

    Customers with no transaction or a non-positive mean are ignored. Values are rescaled
    internally; ``v`` comes back in the currency of ``monetary``.
    """
    x, m = _arrays(frequency, monetary)
    keep = (x > 0) & (m > 0) & np.isfinite(m)
    x, m = x[keep], m[keep]
    if x.size == 0:
        raise ValueError("no customer with a positive mean transaction value")
    scale = float(np.mean(m))
    ms = m / scale
    start = np.zeros(3) if init is None else np.log([init.p, init.q, init.v / scale])

    def nll(theta):
        p, q, v = np.exp(np.clip(theta, -20, 20))
        ll = gamma_gamma_log_likelihood(GammaGammaParams(p, q, v), x, ms)
        val = -float(np.mean(ll)) + penalizer * float(p * p + q * q + v * v)
        return val if math.isfinite(val) else 1e12

    res = optimize.minimize(nll, start, method="L-BFGS-B", bounds=[(-12.0, 12.0)] * 3)
    p, q, v = np.exp(res.x)
    return GammaGammaParams(p=float(p), q=float(q), v=float(v * scale))




# -- per-customer quantities: plain floats on the hot path, numpy arrays elementwise ----------
def _elementwise(one):
    """Apply a one-customer function to floats directly, or elementwise to arrays."""
    vec = np.vectorize(one, otypes=[float], excluded={0})
    sig = inspect.signature(one)

    @functools.wraps(one)
    def wrapper(*args, **kwargs):
        params, *values = sig.bind(*args, **kwargs).args
        if all(isinstance(v, (int, float)) for v in values):
            return one(params, *(float(v) for v in values))
        return vec(params, *values)

    wrapper.__name__ = wrapper.__qualname__ = one.__name__.removesuffix("_one")
    return wrapper

def p_alive_one(params: BGNBDParams, x: float, t_x: float, T: float) -> float:
    """Probability that the customer is still alive at ``T`` (FHL 2005, eq. 11)."""
    if x <= 0:
        return 1.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_ratio = (math.log(a) - math.log(b + x - 1.0)
                 + (r + x) * (math.log(alpha + T) - math.log(alpha + t_x)))
    return 1.0 / (1.0 + math.exp(min(log_ratio, 700.0)))


def prob_no_purchase_one(params: BGNBDParams, x: float, t_x: float, T: float, t: float) -> float:
    """Probability of no purchase in ``(T, T + t]`` given the history (the BG/NBD churn score).

    A customer alive at ``T`` cannot drop out before their next purchase, so
    ``P = (1 - P_alive) + P_alive * ((alpha + T) / (alpha + T + t)) ** (r + x)``,
    the last factor being ``E[exp(-lambda t)]`` under the posterior ``Gamma(r + x, alpha + T)``.
    """
    pa = p_alive_one(params, x, t_x, T)
    none_if_alive = math.exp((params.r + x) * (math.log(params.alpha + T)
                                               - math.log(params.alpha + T + t)))
    return (1.0 - pa) + pa * none_if_alive


def expected_purchases_one(params: BGNBDParams, x: float, t_x: float, T: float, t: float) -> float:
    """Expected purchases in ``(T, T + t]`` given the history (FHL 2005, eq. 10).

    Falls back to quadrature (:func:`_expected_purchases_quadrature`) where ``hyp2f1`` leaves
    its accurate range.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    hyp = float(special.hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + T + t)))
    body = 1.0 - math.exp((r + x) * (math.log(alpha + T) - math.log(alpha + T + t))) * hyp
    out = (a + b + x - 1.0) / (a - 1.0) * body * p_alive_one(params, x, t_x, T)
    if not math.isfinite(out) or out < 0:
        out = _expected_purchases_quadrature(params, x, t_x, T, t)
    return out


def expected_spend_one(params: GammaGammaParams, frequency: float, monetary: float) -> float:
    """Expected value of a future transaction given ``frequency`` past ones of mean ``monetary``.

    ``E[M] = p (v + x m) / (p x + q - 1)``: a credibility blend of the customer's own mean and
    the population mean ``p v / (q - 1)``; with no transaction it is the population mean.
    """
    m = monetary if frequency > 0 else 0.0
    return params.p * (params.v + frequency * m) / (params.p * frequency + params.q - 1.0)


p_alive = _elementwise(p_alive_one)
prob_no_purchase = _elementwise(prob_no_purchase_one)
expected_purchases = _elementwise(expected_purchases_one)
expected_spend = _elementwise(expected_spend_one)
