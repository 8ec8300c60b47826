"""Exact null of the number of agreements between two matchings: fixed points of a random permutation.

If two matchings of n units into m >= n candidates agree on K units, and
under H0 the second matching is the first composed with a uniformly random
permutation tau of the m candidates, then K is the number of fixed points
of tau inside a fixed set of n of its m points.  Its distribution is exact
(inclusion-exclusion over the set of units forced to agree):

    P(K = k) = C(n, k) / (m)_k * sum_j (-1)^j C(n-k, j) / (m-k)_j

with (x)_j = x (x-1) ... (x-j+1) the falling factorial.  For n = m this is
the rencontres distribution, P(K = k) = (1/k!) sum_{j <= n-k} (-1)^j / j!.
The inner sum alternates with decreasing terms, so it is computed in floats
without cancellation trouble; the outer factor is kept in logs, because the
tails of strongly related pairs (k near n, P about 1/n!) underflow float64.
The smallest attainable p-value is P(K = n) = 1/(m)_n exactly (1/n! when
m = n).  Sums of independent counts (one per layer) have the convolution of
these distributions as their exact null, computed in log space too.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import gammaln, logsumexp

from audit.stats.pvalues import LN10


def _log_falling(x: int, j: int) -> float:
    """ln of x (x-1) ... (x-j+1)."""
    return float(gammaln(x + 1) - gammaln(x - j + 1))


@lru_cache(maxsize=256)
def fixed_point_log_pmf(n: int, m: int | None = None) -> np.ndarray:
    """ln P(K = k) for k = 0..n: fixed points of a uniform permutation of ``m`` points within ``n`` of them."""
    m = n if m is None else m
    if not 0 <= n <= m:
        raise ValueError(f"need 0 <= n <= m, got n={n}, m={m}")
    log_pmf = np.full(n + 1, -np.inf)
    for k in range(n + 1):
        r, big = n - k, m - k
        terms, term, total = [1.0], 1.0, 0.0
        for j in range(r):  # term_{j+1} / term_j = (r-j) / ((j+1) (big-j)), decreasing
            term *= (r - j) / ((j + 1) * (big - j))
            if term < 1e-18:
                break
            terms.append(-term if (j % 2 == 0) else term)
        total = math.fsum(terms)
        if total > 0:
            log_comb = float(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1))
            log_pmf[k] = log_comb - _log_falling(m, k) + math.log(total)
    log_pmf.setflags(write=False)
    return log_pmf


def log10_tail(log_pmf: np.ndarray, k: int) -> float:
    """log10 P(K >= k) from a log pmf over 0..n."""
    if k <= 0:
        return 0.0
    if k >= log_pmf.size:
        return -math.inf
    return min(0.0, float(logsumexp(log_pmf[k:])) / LN10)


def convolve_log_pmf(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ln pmf of the sum of two independent counts, from their ln pmfs (exact, in log space)."""
    out = np.full(a.size + b.size - 1, -np.inf)
    for i, la in enumerate(a):
        if la > -np.inf:
            out[i:i + b.size] = np.logaddexp(out[i:i + b.size], la + b)
    return out


def fixed_point_pvalue(k: int, n: int, m: int | None = None) -> float:
    """log10 of the exact P(K >= k) for one matching of ``n`` units into ``m``."""
    return log10_tail(fixed_point_log_pmf(n, m), k)


def fixed_point_floor(n: int, m: int | None = None) -> float:
    """log10 of the smallest attainable p-value, P(K = n) = 1/(m)_n."""
    m = n if m is None else m
    return -_log_falling(m, n) / LN10
