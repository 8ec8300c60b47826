"""Calibration self-check of a method on a baseline population.

Every baseline pair is itself an independent pair, so its p-value should be
uniform.  For population nulls, a pair's p-value is computed against the
pairs that share neither of its models (leave-the-pair's-models-out), which
is exactly the situation of a new suspect pair.  For exact within-pair tests,
the pairs' own p-values are used.  The report gives the false-positive rate
at alpha and a KS test against uniform; a method is excluded from the
verdict when its p-values are anti-conservative: the false-positive rate is
significantly above alpha (one-sided binomial test) or the p-values are
stochastically smaller than uniform (one-sided KS).  Pair p-values share
models, so both tests are approximate; they are a screen, not a proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

SCREEN_LEVEL = 0.01  # level of the miscalibration screens


@dataclass(frozen=True)
class Calibration:
    alpha: float
    pvalues: np.ndarray
    false_positives: int
    n: int
    fpr: float
    fpr_binomial_pvalue: float
    ks_statistic: float
    ks_pvalue: float
    ks_smaller_pvalue: float
    min_attainable: float
    calibrated: bool
    reason: str


def leave_pair_models_out(values: np.ndarray, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Each pair's empirical p-value against the pairs disjoint from it."""
    values = np.asarray(values, dtype=np.float64)
    models = sorted({m for pair in pairs for m in pair})
    index = {m: i for i, m in enumerate(models)}
    member = np.zeros((len(pairs), len(models)), dtype=np.int64)
    for row, (a, b) in enumerate(pairs):
        member[row, index[a]] = member[row, index[b]] = 1
    disjoint = (member @ member.T) == 0
    at_least = values[None, :] >= values[:, None]
    null_sizes = disjoint.sum(axis=1)
    return np.where(null_sizes > 0, (1 + (disjoint & at_least).sum(axis=1)) / (1 + null_sizes), 1.0)


def calibrate(pvalues: np.ndarray, alpha: float, min_attainable: float | None = None) -> Calibration:
    """Screen p-values of independent pairs for anti-conservative behaviour."""
    pvalues = np.asarray(pvalues, dtype=np.float64)
    n = int(pvalues.size)
    floor = float(pvalues.min()) if min_attainable is None and n else (min_attainable or 0.0)
    if n == 0:
        return Calibration(alpha, pvalues, 0, 0, float("nan"), 1.0, float("nan"), 1.0, 1.0, floor, False,
                           "no independent pairs to check calibration on")
    hits = int(np.count_nonzero(pvalues <= alpha))
    binom = float(stats.binomtest(hits, n, alpha, alternative="greater").pvalue)
    ks = stats.kstest(pvalues, "uniform")
    ks_smaller = stats.kstest(pvalues, "uniform", alternative="greater")  # CDF above uniform: p too small
    reasons = []
    if binom < SCREEN_LEVEL:
        reasons.append(f"false-positive rate {hits}/{n} is significantly above alpha={alpha:g}")
    if ks_smaller.pvalue < SCREEN_LEVEL:
        reasons.append(f"p-values are stochastically smaller than uniform (one-sided KS p={ks_smaller.pvalue:.2g})")
    if floor > alpha:
        reasons_note = f" (the smallest attainable p, {floor:.3g}, exceeds alpha: the false-positive rate at alpha is untestable here)"
    else:
        reasons_note = ""
    return Calibration(
        alpha=alpha,
        pvalues=pvalues,
        false_positives=hits,
        n=n,
        fpr=hits / n,
        fpr_binomial_pvalue=binom,
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        ks_smaller_pvalue=float(ks_smaller.pvalue),
        min_attainable=floor,
        calibrated=not reasons,
        reason=("; ".join(reasons) or f"{hits}/{n} independent pairs at p <= {alpha:g}; no sign of anti-conservative p-values")
        + reasons_note,
    )
