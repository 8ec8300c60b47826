"""Population nulls, calibration, multiple testing and combination: known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from audit.evidence.population import effective_pairs
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
        if result.tail is not None:  # hidden in the ~1% of nulls whose normal fit Lilliefors rejects
            model_based.append(result.tail.pvalue)
    assert stats.kstest(empirical, "uniform").pvalue > 0.01
    assert stats.kstest(model_based, "uniform").pvalue > 0.01 and len(model_based) >= 380
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
    honest = calibrate(rng.uniform(size=300), alpha=0.05, min_attainable=1e-4)
    assert honest.calibrated and honest.n == 300 and abs(honest.fpr - 0.05) < 0.04
    broken = calibrate(rng.uniform(size=300) ** 3, alpha=0.05, min_attainable=1e-4)
    assert not broken.calibrated and "significantly above" in broken.reason
    conservative = calibrate(np.sqrt(rng.uniform(size=300)), alpha=0.05, min_attainable=1e-4)
    assert conservative.calibrated and conservative.ks_pvalue < 0.01  # shown by KS, harmless for the verdict


def test_calibration_states_the_true_floor_not_the_smallest_observed_p():
    # issue 11: norm's p-values never went below 0.02 on its pairs, yet its floor is 1e-4
    result = calibrate(np.linspace(0.02, 1, 95), alpha=0.01, min_attainable=1e-4)
    assert result.min_attainable == 1e-4 and "untestable" not in result.reason
    assert "untestable" in calibrate(np.linspace(0.02, 1, 95), alpha=0.01, min_attainable=0.05).reason
    with pytest.raises(TypeError):
        calibrate(np.linspace(0.02, 1, 95), alpha=0.01)  # a floor must be given, never guessed from the data


def _complete(models: int):
    return [(f"m{i}", f"m{j}") for i in range(models) for j in range(i + 1, models)]


def test_effective_pairs_between_one_and_all_pairs():
    rng = np.random.default_rng(4)
    pairs = _complete(12)
    # pair values driven by one model effect each: pairs sharing a model are strongly correlated
    effect = {f"m{i}": rng.normal() for i in range(12)}
    shared = np.array([effect[a] + effect[b] + 0.01 * rng.normal() for a, b in pairs])
    independent = rng.normal(size=len(pairs))
    assert effective_pairs(independent, pairs) > 0.3 * len(pairs)  # one noisy draw; the simulation below checks the mean
    assert 1 <= effective_pairs(shared, pairs) < 0.15 * len(pairs)
    assert effective_pairs(independent, [(f"a{i}", f"b{i}") for i in range(len(pairs))]) == pytest.approx(len(pairs), rel=0.3)
    result = population_test(10.0, shared, transform="identity", pair_models=pairs)
    assert result.min_pvalue == pytest.approx(1 / (1 + effective_pairs(shared, pairs)))
    assert result.pvalue == result.min_pvalue > 1 / (1 + len(pairs))  # the floor n_eff supports, not 1/(n+1)


@pytest.mark.parametrize("models,effect_sd", [(10, 1.0), (21, 1.0), (21, 0.3)])
def test_effective_pairs_matches_the_variance_of_the_mean_over_resampled_populations(models, effect_sd):
    """Model-level simulation: n_eff ~ Var(one pair) / Var(mean over the pairs)."""
    rng = np.random.default_rng(8)
    pairs = _complete(models)
    index = [(int(a[1:]), int(b[1:])) for a, b in pairs]
    means, estimates = [], []
    for _ in range(300):
        effect = rng.normal(size=models) * effect_sd
        values = np.array([effect[i] + effect[j] + rng.normal() for i, j in index])
        means.append(values.mean())
        estimates.append(effective_pairs(values, pairs))
    truth = (2 * effect_sd ** 2 + 1) / np.var(means)
    assert np.median(estimates) == pytest.approx(truth, rel=0.25)


def test_model_based_tail_is_hidden_when_lilliefors_rejects():
    rng = np.random.default_rng(2)
    null = np.concatenate([rng.normal(0, 0.01, 150), [0.9] * 30])  # far from normal
    result = population_test(0.95, null)
    assert result.tail is None and "Lilliefors rejects" in result.tail_note
