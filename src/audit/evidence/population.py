"""The population null: how unusual is a similarity among independent pairs?

A baseline population of independently trained models gives, for a method,
one similarity per pair.  The empirical p-value of an observed similarity is
``(1 + #{null >= observed}) / (1 + n)`` (never zero; its floor 1/(n+1) is
stated).  Beside it, never instead of it, a model-based tail: the null values
are mapped to an approximately normal scale (Fisher z for correlations), a
normal is fitted, and its goodness of fit is reported (Lilliefors' KS test,
which accounts for the fitted parameters), so that an observation beyond
every null value still gets a finite, clearly labelled, p-value.

Pairs that share a model are not independent draws; the number of models and
of disjoint pairs is reported with the pair count, and calibration uses a
leave-the-pair's-models-out scheme (see calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.diagnostic import lilliefors

from audit.stats import LN10

MIN_PAIRS_FOR_TAIL = 8
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
    min_pvalue: float
    n_pairs: int
    n_models: int | None
    disjoint_pairs: int | None
    exceedances: int
    tail: ParametricTail | None


def fit_tail(observed: float, null: np.ndarray, transform: str = "fisher-z") -> ParametricTail | None:
    """Model-based upper-tail p-value; ``None`` when the null is too small or degenerate."""
    z = TRANSFORMS[transform](null)
    if z.size < MIN_PAIRS_FOR_TAIL or not np.all(np.isfinite(z)) or np.std(z) == 0:
        return None
    loc, scale = float(np.mean(z)), float(np.std(z, ddof=1))
    z_obs = float(TRANSFORMS[transform](np.array([observed]))[0])
    log_sf = float(stats.norm.logsf(z_obs, loc=loc, scale=scale))
    gof_statistic, gof_pvalue = lilliefors(z, dist="norm", pvalmethod="table")
    return ParametricTail(
        transform=transform,
        loc=loc,
        scale=scale,
        pvalue=math.exp(log_sf),
        log10_pvalue=log_sf / LN10,
        gof_test="Lilliefors (KS with fitted normal)",
        gof_statistic=float(gof_statistic),
        gof_pvalue=float(gof_pvalue),
    )


def population_test(
    observed: float,
    null: np.ndarray,
    *,
    transform: str = "fisher-z",
    pair_models: list[tuple[str, str]] | None = None,
) -> PopulationTest:
    """Upper-tail test of ``observed`` against population ``null`` values.

    ``pair_models`` names the two models of each null pair, to report how many
    distinct models (and disjoint pairs) the null rests on.
    """
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0:
        raise ValueError("empty null distribution")
    exceed = int(np.count_nonzero(null >= observed))
    pvalue = (1 + exceed) / (1 + null.size)
    models = sorted({m for pair in pair_models for m in pair}) if pair_models else None
    return PopulationTest(
        statistic=float(observed),
        null_distribution=null,
        pvalue=pvalue,
        log10_pvalue=math.log10(pvalue),
        min_pvalue=1 / (1 + null.size),
        n_pairs=int(null.size),
        n_models=len(models) if models else None,
        disjoint_pairs=len(models) // 2 if models else None,
        exceedances=exceed,
        tail=fit_tail(observed, null, transform),
    )
