"""The population null: how unusual is a similarity among independent pairs?

A baseline population of independently trained models gives, for a method,
one similarity per pair.  Pairs that share a model are not independent
draws, so the population is worth fewer pairs than it has: the *effective*
number of pairs n_eff is the number of independent pairs whose mean would
have the same variance as the mean over the population's pairs (Hoeffding's
U-statistic variance, estimated by the leave-one-model-out jackknife on the
ranks of the values; n_eff is kept between 1 and the number of pairs).
The empirical p-value of an observed similarity is
``max((1 + #{null >= observed}) / (1 + n), 1 / (1 + n_eff))``: never zero,
and never below the floor that the population can honestly support.

Beside it, never instead of it, a model-based tail: the null values are
mapped to an approximately normal scale (Fisher z for correlations), a normal
is fitted, and its goodness of fit is tested (Lilliefors' KS test, which
accounts for the fitted parameters); the tail is not shown when that test
rejects the normal at 1%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.diagnostic import lilliefors

from audit.stats import LN10

MIN_PAIRS_FOR_TAIL = 8
GOF_LEVEL = 0.01  # the model-based tail is hidden when its fit is rejected at this level
_R_CLIP = 1.0 - 1e-15  # Fisher z of |r| = 1 is infinite


def fisher_z(values: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(values, dtype=np.float64), -_R_CLIP, _R_CLIP))


TRANSFORMS = {"fisher-z": fisher_z, "identity": lambda v: np.asarray(v, dtype=np.float64)}


@dataclass(frozen=True)
class ParametricTail:
    """A normal fitted to the transformed null: model-based, not exact."""

    transform: str
    loc: float
    scale: float
    pvalue: float
    log10_pvalue: float
    gof_test: str
    gof_statistic: float
    gof_pvalue: float


@dataclass(frozen=True)
class PopulationTest:
    """An observed similarity against the similarities of independent pairs."""

    statistic: float
    null_distribution: np.ndarray
    pvalue: float
    log10_pvalue: float
    min_pvalue: float  # the true floor: 1 / (1 + n_eff)
    n_pairs: int
    effective_pairs: float
    n_models: int | None
    disjoint_pairs: int | None
    exceedances: int
    tail: ParametricTail | None
    tail_note: str | None = None  # why no model-based tail is shown


def fit_tail(observed: float, null: np.ndarray, transform: str = "fisher-z") -> tuple[ParametricTail | None, str | None]:
    """Model-based upper-tail p-value, or None and why (null too small or degenerate, or the fit rejected)."""
    z = TRANSFORMS[transform](null)
    if z.size < MIN_PAIRS_FOR_TAIL or not np.all(np.isfinite(z)) or np.std(z) == 0:
        return None, f"no model-based tail: fewer than {MIN_PAIRS_FOR_TAIL} distinct null values"
    loc, scale = float(np.mean(z)), float(np.std(z, ddof=1))
    z_obs = float(TRANSFORMS[transform](np.array([observed]))[0])
    log_sf = float(stats.norm.logsf(z_obs, loc=loc, scale=scale))
    gof_statistic, gof_pvalue = lilliefors(z, dist="norm", pvalmethod="table")
    if gof_pvalue < GOF_LEVEL:
        return None, (f"model-based tail hidden: Lilliefors rejects a normal {transform} null "
                      f"(D = {gof_statistic:.3f}, p = {gof_pvalue:.3g})")
    return ParametricTail(
        transform=transform,
        loc=loc,
        scale=scale,
        pvalue=math.exp(log_sf),
        log10_pvalue=log_sf / LN10,
        gof_test="Lilliefors (KS with fitted normal)",
        gof_statistic=float(gof_statistic),
        gof_pvalue=float(gof_pvalue),
    ), None


def effective_pairs(values: np.ndarray, pairs: list[tuple[str, str]] | None) -> float:
    """n_eff = Var(one pair) / Var(mean over the pairs), the latter by the leave-one-model-out jackknife.

    The jackknife variance of a U-statistic (Arvesen 1969) counts the pairs'
    own variance twice; one share is removed.
    Computed on the ranks of the values, so one outlying pair does not drive it.
    """
    n = len(values)
    if not pairs or n < 3:
        return float(n)
    ranks = stats.rankdata(values)
    spread = float(np.var(ranks, ddof=1))
    models = sorted({m for pair in pairs for m in pair})
    if spread == 0 or len(models) < 3:
        return float(n)
    total = float(ranks.sum())
    left_out = []
    for model in models:
        inside = np.array([model in pair for pair in pairs])
        if inside.all():
            continue
        left_out.append((total - float(ranks[inside].sum())) / (n - int(inside.sum())))
    k = len(left_out)
    jackknife = (k - 1) / k * float(np.sum(np.square(np.array(left_out) - np.mean(left_out))))
    # The jackknife counts the pairs' own variance twice (E = 4 zeta1 / m + 2 zeta2 / N to first order):
    # remove one zeta2 / N, never going below the variance of N independent pairs.
    variance = max(jackknife - spread / n, spread / n)
    return float(min(n, max(1.0, spread / variance)))


def population_test(
    observed: float,
    null: np.ndarray,
    *,
    transform: str = "fisher-z",
    pair_models: list[tuple[str, str]] | None = None,
) -> PopulationTest:
    """Upper-tail test of ``observed`` against population ``null`` values.

    ``pair_models`` names the two models of each null pair: the effective
    number of pairs (and so the floor) and the count of distinct models rest on it.
    """
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0:
        raise ValueError("empty null distribution")
    exceed = int(np.count_nonzero(null >= observed))
    n_eff = effective_pairs(null, pair_models)
    floor = 1.0 / (1.0 + n_eff)
    pvalue = max((1 + exceed) / (1 + null.size), floor)
    models = sorted({m for pair in pair_models for m in pair}) if pair_models else None
    tail, note = fit_tail(observed, null, transform)
    return PopulationTest(
        statistic=float(observed),
        null_distribution=null,
        pvalue=pvalue,
        log10_pvalue=math.log10(pvalue),
        min_pvalue=floor,
        n_pairs=int(null.size),
        effective_pairs=n_eff,
        n_models=len(models) if models else None,
        disjoint_pairs=len(models) // 2 if models else None,
        exceedances=exceed,
        tail=tail,
        tail_note=note,
    )
