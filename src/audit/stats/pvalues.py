"""p-values in log space: Student t tails, Spearman against a permutation, Fisher, Bonferroni.

scipy's ``t.logsf`` and ``chi2.logsf`` return -inf once the p-value leaves
float64's range, which strongly related pairs of models reach routinely; the
formulas here stay finite and agree with scipy where scipy is finite.
scipy is imported by the functions that use it: importing this module (as
every method does) must not cost scipy's second of start-up.
"""

from __future__ import annotations

import math

import numpy as np

LN10 = math.log(10.0)
_SERIES_BELOW = 0.1  # use the hypergeometric series for x = df/(df+t^2) below this


def log_t_sf(t: float, df: float) -> float:
    """Natural log of P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return -math.inf if t > 0 else 0.0
    x = df / (df + t * t)
    if t <= 0 or x >= _SERIES_BELOW:
        from scipy import stats

        return float(stats.t.logsf(t, df))
    # P(T > t) = I_x(a, b) / 2 with a = df/2, b = 1/2, and
    # I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 2F1(a+b, 1; a+1; x)  (DLMF 8.17.8).
    from scipy.special import betaln

    a, b = df / 2.0, 0.5
    total, term, k = 1.0, 1.0, 0
    while term > 1e-17 * total and k < 10_000:
        term *= (a + b + k) / (a + 1 + k) * x
        total += term
        k += 1
    return a * math.log(x) + b * math.log1p(-x) - math.log(a) - float(betaln(a, b)) + math.log(total) - math.log(2.0)


def log10_factorial(n: int) -> float:
    from scipy.special import gammaln

    return float(gammaln(n + 1)) / LN10


def spearman_log10(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman rho of two tie-free sequences and its one-sided (rho > 0) log10 p.

    Under H0 the pairing is a uniformly random permutation; p uses the t
    approximation of scipy's ``spearmanr`` but is floored at 1/n!, the exact
    probability of the single best pairing (no p-value can be smaller).
    """
    from scipy import stats

    n = len(x)
    rho = float(stats.spearmanr(x, y).statistic)
    if n < 3 or not math.isfinite(rho):
        return rho, 0.0
    df = n - 2
    t = math.inf if rho >= 1.0 else rho * math.sqrt(df / ((1.0 - rho) * (1.0 + rho)))
    return rho, max(log_t_sf(t, df) / LN10, -log10_factorial(n))


def fisher_log10(log10_p: np.ndarray) -> tuple[float, float]:
    """Fisher's method: X = -2 sum ln p ~ chi2(2k); returns (X, log10 combined p).

    For even degrees of freedom the chi-square tail is a finite Poisson sum,
    P(X > x) = exp(-x/2) sum_{j<k} (x/2)^j / j!, evaluated here with logsumexp.
    """
    log10_p = np.asarray(log10_p, dtype=np.float64)
    k = log10_p.size
    if k == 0:
        raise ValueError("no p-values to combine")
    x = float(-2.0 * LN10 * log10_p.sum())
    half = x / 2.0
    if half == 0.0:
        return x, 0.0
    from scipy.special import gammaln, logsumexp

    j = np.arange(k)
    log_sf = -half + float(logsumexp(j * math.log(half) - gammaln(j + 1)))
    return x, min(0.0, log_sf / LN10)


def bonferroni_min_log10(log10_p: np.ndarray) -> float:
    """log10 of min(1, m * min p): the smallest of m p-values, corrected for having picked it."""
    log10_p = np.asarray(log10_p, dtype=np.float64)
    return min(0.0, float(log10_p.min()) + math.log10(log10_p.size))


def format_pvalue(log10_p: float) -> str:
    """A p-value from its log10, readable far below float64's range (e.g. 3.2e-4512)."""
    if log10_p >= -4:
        return f"{10 ** log10_p:.4g}"
    exponent = math.floor(log10_p)
    mantissa = 10 ** (log10_p - exponent)
    if mantissa >= 9.995:
        mantissa, exponent = 1.0, exponent + 1
    return f"{mantissa:.2f}e{exponent}"
