"""Multiple testing and p-value combination in log10 space.

statsmodels' ``multipletests`` is the reference (the tests compare against
it), but it works on float p-values, and the p-values this tool meets go far
below 1e-308.  Holm and Benjamini-Hochberg are monotone step procedures on
sorted p-values, so they carry over to logarithms exactly.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from audit.stats import LN10



def holm_log10(log10_p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, as log10."""
    log10_p = np.asarray(log10_p, dtype=np.float64)
    m = log10_p.size
    order = np.argsort(log10_p, kind="stable")
    scaled = np.log10(m - np.arange(m)) + log10_p[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 0.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def bh_log10(log10_p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (FDR), as log10."""
    log10_p = np.asarray(log10_p, dtype=np.float64)
    m = log10_p.size
    order = np.argsort(log10_p, kind="stable")
    scaled = np.log10(m / np.arange(1, m + 1)) + log10_p[order]
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 0.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def cauchy_combination(log10_p: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Cauchy combination test (Liu & Xie 2020); returns the combined log10 p.

    T = sum_i w_i tan((1/2 - p_i) pi) with weights summing to one is standard
    Cauchy under H0 whatever the dependence between the p_i (approximately,
    in the tail), so p = 1/2 - arctan(T)/pi.  For tiny p_i the terms are
    1/(pi p_i), summed here in log space so that nothing overflows.
    """
    log10_p = np.asarray(log10_p, dtype=np.float64)
    if log10_p.size == 0:
        raise ValueError("no p-values to combine")
    w = np.full(log10_p.size, 1.0 / log10_p.size) if weights is None else np.asarray(weights, float) / np.sum(weights)
    tiny = log10_p < -15  # tan((1/2 - p) pi) = 1/tan(p pi) = 1/(p pi) to double precision
    p = np.power(10.0, log10_p[~tiny])
    moderate = float(np.sum(w[~tiny] / np.tan(np.pi * p))) if p.size else 0.0
    if not tiny.any():
        return _cauchy_log10_sf(moderate)
    # ln of the tiny terms w / (pi p): all positive and huge.
    ln_big = np.log(w[tiny]) - math.log(math.pi) - log10_p[tiny] * LN10
    ln_total = float(logsumexp(ln_big))
    if ln_total < 700:  # representable: add the moderate terms exactly
        return _cauchy_log10_sf(math.exp(ln_total) + moderate)
    # T is astronomically large; the moderate terms are negligible and
    # P(Cauchy > T) = arctan(1/T)/pi = 1/(pi T) to double precision.
    return -(ln_total + math.log(math.pi)) / LN10


def _cauchy_log10_sf(t: float) -> float:
    """log10 P(C > t) for a standard Cauchy C, accurate in both tails."""
    if t > 0:
        return math.log10(math.atan(1.0 / t) / math.pi)
    return math.log10(0.5 - math.atan(t) / math.pi)
