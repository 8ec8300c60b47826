"""Permutation tests of statistics that are linear in the permutation.

Every correlation-type fingerprint here (attn-std profiles over layers, norm
gains over hidden coordinates, sampled weights over residual coordinates)
compares A with B after permuting B's units, and its statistic has the form

    T(sigma) = sum_i M[i, sigma(i)]

for a fixed matrix M built once from the two fingerprints (T(identity) =
trace M is the observed value).  The null therefore costs one gather per
permutation, whatever the size of the fingerprints.  scipy's
``permutation_test`` enumerates all n! permutations when n! <= n_resamples
(exact p = #{T >= observed} / n!) and otherwise draws n_resamples (p =
(1 + #{T >= observed}) / (1 + n_resamples), never 0).

Beside a Monte Carlo p-value, a model-based tail: the permutation mean and
variance of T are known in closed form (Hoeffding's combinatorial central
limit theorem), and a normal with those moments gives a p-value beyond the
permutation floor.  It is labelled model-based and never replaces the
permutation p-value.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from audit.stats.pvalues import LN10, log10_factorial
from audit.stats.results import EXACT, MONTE_CARLO, Null, Tail, TestResult

BATCH_ELEMENTS = 1 << 22  # bounds the memory of one vectorised batch of permutations


def hoeffding_moments(matrix: np.ndarray) -> tuple[float, float]:
    """Mean and variance of sum_i M[i, sigma(i)] over uniformly random permutations sigma."""
    n = matrix.shape[0]
    mean = float(matrix.sum()) / n
    if n < 2:
        return mean, 0.0
    centred = matrix - matrix.mean(axis=1, keepdims=True) - matrix.mean(axis=0, keepdims=True) + matrix.mean()
    return mean, float(np.square(centred).sum()) / (n - 1)


def linear_permutation_test(matrix: np.ndarray, *, n_resamples: int, seed: int, unit: str) -> TestResult:
    """Upper-tail test of trace(M) against sum_i M[i, sigma(i)] over permutations sigma.

    ``unit`` names what is permuted (e.g. "layers of B"), for the description.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    rows = np.arange(n)

    def statistic(order: np.ndarray, axis: int = -1) -> np.ndarray:
        return matrix[rows, order].sum(axis=-1)

    result = stats.permutation_test(
        (rows,), statistic, permutation_type="pairings", vectorized=True, n_resamples=n_resamples,
        alternative="greater", batch=max(1, BATCH_ELEMENTS // max(n, 1)), rng=np.random.default_rng(seed),
    )
    exact = math.factorial(n) <= n_resamples
    if exact:
        size = math.factorial(n)
        null = Null(EXACT, f"all {n}! = {size} permutations of the {unit}", size, None, -math.log10(size))
    else:
        null = Null(MONTE_CARLO, f"{n_resamples} random permutations of the {n} {unit}", n_resamples, seed,
                    -math.log10(n_resamples + 1))
    observed = float(result.statistic)
    mean, var = hoeffding_moments(matrix)
    tail = None
    if not exact and var > 0:  # an enumerated null is the whole truth; no model goes beyond it
        z = (observed - mean) / math.sqrt(var)
        # No permutation p-value is below 1/n!, so neither is its approximation.
        tail = Tail(max(float(stats.norm.logsf(z)) / LN10, -log10_factorial(n)),
                    "model-based: normal with the exact permutation mean and variance (Hoeffding's combinatorial CLT), "
                    f"z = {z:.3f}, floored at 1/n!")
    return TestResult(
        statistic=observed,
        log10_pvalue=math.log10(float(result.pvalue)),
        null=null,
        null_distribution=np.asarray(result.null_distribution, dtype=np.float64),
        tail=tail,
    )
