"""Permutation tests of statistics that are linear in the permutation.

Every correlation-type fingerprint here (attn-std profiles over layers, norm
gains over hidden coordinates, sampled weights over residual coordinates)
compares A with B after permuting B's units, and its statistic has the form

    T(sigma) = sum_i M[i, sigma(i)]

for a fixed matrix M built once from the two fingerprints (T(identity) =
trace M is the observed value).  The exact p-value is
``p_exact = #{sigma: T(sigma) >= trace M} / n!``.

- Small n (n! <= n_resamples): every permutation is enumerated (scipy's
  ``permutation_test``) and ``p_exact`` is reported as it is.
- Otherwise p_exact is bounded two ways, each valid on its own:
  a Monte Carlo estimate ``p_mc = (1 + #{T >= observed}) / (1 + n_resamples)``
  (a valid p-value, but never below 1/(n_resamples + 1)), and a
  deterministic upper bound ``B >= p_exact`` from concentration inequalities
  for permutation statistics, which needs no sampling and reaches far below
  the Monte Carlo floor when the statistic is many null-sds out:

  * Cantelli (one-sided Chebyshev): P(T - mu >= t) <= var / (var + t^2),
    with the exact permutation mean and variance of T (Hoeffding, closed form);
  * Chatterjee (2007, "Stein's method for concentration inequalities",
    Prop. 1.1): for entries a_ij in [0, 1], P(|X - EX| >= t) <=
    2 exp(-t^2 / (4 EX + 2t)).  M is first reduced by row and column
    constants (which shift T by the same amount for every sigma) so that its
    smallest entry is 0, then divided by its range.

  The reported p-value is the Monte Carlo one, except when no draw reached
  the observed value (p_mc at its floor 1/(n_resamples + 1)): then it is
  ``min(p_mc, B)``.  This is exactly valid: at levels a >= 1/(n_resamples + 1)
  it rejects exactly when p_mc does, and below that only when B <= a, which
  implies p_exact <= a.  Its true smallest attainable value is computed, not
  observed: ``min(1/(n_resamples + 1), B at the largest value T can take)``
  (an assignment problem, solved exactly).

Beside it, a model-based normal tail with the exact moments (Hoeffding's
combinatorial CLT) is shown, never decisive, and hidden when D'Agostino's
normality test on the Monte Carlo null draws rejects the normal.
"""

from __future__ import annotations

import math

import numpy as np

from audit.stats.pvalues import LN10, log10_factorial
from audit.stats.results import EXACT, MONTE_CARLO, Null, Tail, TestResult

BATCH_ELEMENTS = 1 << 22  # bounds the memory of one vectorised batch of permutations
GOF_LEVEL = 0.01  # a model-based tail is hidden when its fit is rejected at this level
BOUND = "min(Cantelli with the exact permutation variance, Chatterjee 2007 Prop. 1.1)"


def hoeffding_moments(matrix: np.ndarray) -> tuple[float, float]:
    """Mean and variance of sum_i M[i, sigma(i)] over uniformly random permutations sigma."""
    n = matrix.shape[0]
    mean = float(matrix.sum()) / n
    if n < 2:
        return mean, 0.0
    centred = matrix - matrix.mean(axis=1, keepdims=True) - matrix.mean(axis=0, keepdims=True) + matrix.mean()
    return mean, float(np.square(centred).sum()) / (n - 1)


def cantelli_log10(excess: float, var: float) -> float:
    """log10 of Cantelli's bound on P(T - mu >= excess)."""
    if excess <= 0 or var <= 0:
        return 0.0 if excess <= 0 else -math.inf
    ratio = var / (excess * excess)
    return -math.log10(1.0 + 1.0 / ratio) if ratio > 1e-300 else math.log10(ratio)


def chatterjee_log10(matrix: np.ndarray, observed: float) -> float:
    """log10 of Chatterjee's bound on P(T >= observed), after reducing M to entries in [0, 1]."""
    reduced = matrix - matrix.min(axis=1, keepdims=True)
    reduced = reduced - reduced.min(axis=0, keepdims=True)
    shift = float(matrix.sum() - reduced.sum()) / matrix.shape[0]  # T = T_reduced + shift for every sigma
    scale = float(reduced.max())
    if scale <= 0:
        return 0.0
    mean = float(reduced.sum()) / matrix.shape[0] / scale
    excess = (observed - shift) / scale - mean
    if excess <= 0:
        return 0.0
    return min(0.0, (math.log(2.0) - excess * excess / (4.0 * mean + 2.0 * excess)) / LN10)


def tail_bound_log10(matrix: np.ndarray, observed: float) -> float:
    """A deterministic upper bound on the exact permutation p-value of ``observed`` (log10)."""
    mean, var = hoeffding_moments(matrix)
    return min(cantelli_log10(observed - mean, var), chatterjee_log10(matrix, observed))


def max_statistic(matrix: np.ndarray) -> float:
    """The largest value sum_i M[i, sigma(i)] takes over all permutations."""
    from scipy.optimize import linear_sum_assignment  # scipy is imported by the tests that run, not at start

    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return float(matrix[rows, cols].sum())


def preload() -> None:
    """Import the parts of scipy :func:`linear_permutation_test` uses (about half a second on a small
    machine), e.g. while worker processes read the weights it will test."""
    import scipy.stats  # noqa: F401


def linear_permutation_test(matrix: np.ndarray, *, n_resamples: int, seed: int, unit: str) -> TestResult:
    """Upper-tail test of trace(M) against sum_i M[i, sigma(i)] over permutations sigma.

    ``unit`` names what is permuted (e.g. "layers of B"), for the description.
    """
    from scipy import stats

    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    rows = np.arange(n)

    def statistic(order: np.ndarray, axis: int = -1) -> np.ndarray:
        return matrix[rows, order].sum(axis=-1)

    result = stats.permutation_test(
        (rows,), statistic, permutation_type="pairings", vectorized=True, n_resamples=n_resamples,
        alternative="greater", batch=max(1, BATCH_ELEMENTS // max(n, 1)), rng=np.random.default_rng(seed),
    )
    observed = float(result.statistic)
    draws = np.asarray(result.null_distribution, dtype=np.float64)
    if math.factorial(n) <= n_resamples:
        size = math.factorial(n)
        # the true floor: P(T >= max T), the share of permutations reaching the maximum
        floor = math.log10(np.count_nonzero(draws >= draws.max() - _tolerance(draws)) / size)
        null = Null(EXACT, f"all {n}! = {size} permutations of the {unit}", size, None, floor)
        return TestResult(observed, math.log10(float(result.pvalue)), null, draws)
    log10_mc = math.log10(float(result.pvalue))
    log10_bound = tail_bound_log10(matrix, observed)
    at_floor = int(np.count_nonzero(draws >= observed)) == 0
    log10_p = min(log10_mc, log10_bound) if at_floor else log10_mc
    floor = min(-math.log10(n_resamples + 1), tail_bound_log10(matrix, max_statistic(matrix)))
    null = Null(MONTE_CARLO, f"{n_resamples} random permutations of the {n} {unit}; when none reaches the observed "
                f"value, the conservative tail bound {BOUND} if smaller", n_resamples, seed, floor,
                bound=BOUND, monte_carlo_log10_pvalue=log10_mc, bound_log10_pvalue=log10_bound)
    return TestResult(observed, log10_p, null, draws, _normal_tail(matrix, observed, draws, n))


def _tolerance(values: np.ndarray) -> float:
    return 1e-12 * max(1.0, float(np.abs(values).max()))


def _normal_tail(matrix: np.ndarray, observed: float, draws: np.ndarray, n: int) -> Tail | None:
    """The model-based tail, or None when the normal does not fit the null draws."""
    from scipy import stats

    mean, var = hoeffding_moments(matrix)
    if var <= 0 or draws.size < 20:
        return None
    fit = stats.normaltest(draws)
    if not fit.pvalue >= GOF_LEVEL:
        return None
    z = (observed - mean) / math.sqrt(var)
    # No permutation p-value is below 1/n!, so neither is its approximation.
    return Tail(max(float(stats.norm.logsf(z)) / LN10, -log10_factorial(n)),
                "model-based: normal with the exact permutation mean and variance (Hoeffding's combinatorial CLT), "
                f"z = {z:.3f}, floored at 1/n!; D'Agostino-Pearson normality of the null draws p = {fit.pvalue:.3g}")
