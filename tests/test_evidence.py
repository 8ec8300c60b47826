"""Population nulls, calibration, multiple testing and combination: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from audit.evidence import (
    bh_log10,
    calibrate,
    cauchy_combination,
    holm_log10,
    leave_pair_models_out,
    population_test,
)


def _correlations(rng, n, d=30):
    """Pearson r of independent normal vectors: a null with a known law."""
    x, y = rng.standard_normal((2, n, d))
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))


def test_population_pvalues_are_uniform_under_the_null():
    rng = np.random.default_rng(2024)
    empirical, model_based = [], []
    for _ in range(400):
        null = _correlations(rng, 150)
        observed = _correlations(rng, 1)[0]
        result = population_test(observed, null)
        empirical.append(result.pvalue)
        model_based.append(result.tail.pvalue)
    assert stats.kstest(empirical, "uniform").pvalue > 0.01
    assert stats.kstest(model_based, "uniform").pvalue > 0.01
    # The exact law of the empirical p under exchangeability: P(p <= k/(n+1)) = k/(n+1).
    assert abs(np.mean(np.array(empirical) <= 0.05) - 0.05) < 0.035


def test_observation_beyond_the_null_gets_the_floor_and_a_smaller_model_based_p():
    rng = np.random.default_rng(1)
    null = _correlations(rng, 120)
    result = population_test(0.95, null)
    assert result.exceedances == 0
    assert result.pvalue == 1 / 121 == result.min_pvalue
    assert result.tail is not None and result.tail.pvalue < result.pvalue
    # Fisher z of r ~ N(0, 1/(d-3)) for d = 30: the fitted tail matches the exact law.
    exact = stats.norm.sf(np.arctanh(0.95), scale=1 / math.sqrt(27))
    assert result.tail.log10_pvalue == pytest.approx(math.log10(exact), rel=0.25)
    assert result.tail.gof_pvalue > 0.01


def test_empirical_pvalue_counts_ties_and_names_models():
    null = np.array([0.1, 0.2, 0.2, 0.3])
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")]
    result = population_test(0.2, null, transform="identity", pair_models=pairs)
    assert result.pvalue == (1 + 3) / 5
    assert (result.n_pairs, result.n_models, result.disjoint_pairs) == (4, 4, 2)
    assert result.tail is None  # too few pairs for a parametric tail


def test_identical_models_r_equal_one_stays_finite():
    rng = np.random.default_rng(3)
    result = population_test(1.0, _correlations(rng, 100))
    assert np.isfinite(result.tail.log10_pvalue) and result.tail.log10_pvalue < -50


@pytest.mark.parametrize("seed", range(5))
def test_holm_and_bh_match_statsmodels(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=8), rng.uniform(size=4) ** 6, [1.0, 0.5, 0.5]])
    for ours, method in ((holm_log10, "holm"), (bh_log10, "fdr_bh")):
        np.testing.assert_allclose(10 ** ours(np.log10(p)), multipletests(p, method=method)[1], rtol=1e-12)


def test_holm_and_bh_in_log_space_beyond_float64():
    log10_p = np.array([-500.0, -2.0, -400.0])
    np.testing.assert_allclose(holm_log10(log10_p), [-500 + math.log10(3), -2.0, -400 + math.log10(2)])
    np.testing.assert_allclose(bh_log10(log10_p), [-500 + math.log10(3), -2.0, -400 + math.log10(1.5)])


@pytest.mark.parametrize("p,w", [([0.01, 0.2, 0.7], None), ([0.3, 0.9], [1, 3]), ([1e-10, 0.5], None), ([0.5], None)])
def test_cauchy_combination_matches_closed_form(p, w):
    p = np.array(p)
    weights = np.full(p.size, 1 / p.size) if w is None else np.array(w) / np.sum(w)
    t = np.sum(weights * np.tan((0.5 - p) * np.pi))
    closed = 0.5 - np.arctan(t) / np.pi
    assert 10 ** cauchy_combination(np.log10(p), None if w is None else np.array(w)) == pytest.approx(closed, rel=1e-9)
    assert stats.cauchy.sf(t) == pytest.approx(closed, rel=1e-9)


def test_cauchy_combination_far_below_float64():
    # Dominated by the smallest p: p_comb -> p_min / w_min.
    assert cauchy_combination(np.array([-400.0, -2.0])) == pytest.approx(-400 + math.log10(2), abs=1e-9)
    assert cauchy_combination(np.array([-20.0, -20.0])) == pytest.approx(-20.0, abs=1e-9)


def test_cauchy_combination_is_valid_under_perfect_dependence():
    rng = np.random.default_rng(5)
    p = rng.uniform(size=4000)
    combined = 10 ** np.array([cauchy_combination(np.log10([x, x, x])) for x in p])
    assert np.mean(combined <= 0.05) == pytest.approx(0.05, abs=0.015)


def test_leave_pair_models_out_excludes_every_pair_touching_the_two_models():
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("a", "d"), ("b", "d")]
    values = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5])
    p = leave_pair_models_out(values, pairs)
    assert p[0] == 1 / 2  # against ("c", "d") only, which is smaller
    assert p[3] == 2 / 2  # ("c", "d") against ("a", "b") = 0.9 >= 0.3


def test_calibration_flags_anti_conservative_pvalues():
    rng = np.random.default_rng(9)
    honest = calibrate(rng.uniform(size=300), alpha=0.05)
    assert honest.calibrated and honest.n == 300 and abs(honest.fpr - 0.05) < 0.04
    broken = calibrate(rng.uniform(size=300) ** 3, alpha=0.05)
    assert not broken.calibrated and "significantly above" in broken.reason
    conservative = calibrate(np.sqrt(rng.uniform(size=300)), alpha=0.05)
    assert conservative.calibrated and conservative.ks_pvalue < 0.01  # shown by KS, harmless for the verdict
