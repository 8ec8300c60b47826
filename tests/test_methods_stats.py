"""Shared statistics: log-space p-values against scipy, permutation tests against enumeration, seeded streams."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from audit.stats import (
    EXACT,
    MONTE_CARLO,
    bonferroni_min_log10,
    derive_seed,
    fisher_log10,
    hash_rank,
    hoeffding_moments,
    linear_permutation_test,
    log10_factorial,
    log_t_sf,
    seeded_subset,
    spearman_log10,
)
from audit.stats.permutation import cantelli_log10, chatterjee_log10, max_statistic, tail_bound_log10


@pytest.mark.parametrize("df", [3, 30, 500])
def test_t_tail_matches_scipy_where_scipy_is_finite(df):
    for t in [-2.0, 0.0, 0.5, 3.0, 10.0, 40.0, 300.0]:
        expected = stats.t.logsf(t, df)
        if np.isfinite(expected) and expected > -700:
            assert log_t_sf(t, df) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_t_tail_keeps_going_where_scipy_underflows():
    assert stats.t.logsf(1e6, 126) == -np.inf
    far = log_t_sf(1e6, 126)
    assert np.isfinite(far) and far < -1000
    # Monotone and continuous across scipy's range limit.
    values = [log_t_sf(t, 126) for t in np.geomspace(10, 1e8, 200)]
    assert np.all(np.diff(values) < 0)


def test_fisher_matches_scipy_and_survives_underflow():
    log10_p = np.log10([0.2, 0.03, 0.5, 0.011])
    chi2, combined = fisher_log10(log10_p)
    reference = stats.combine_pvalues(10 ** log10_p, method="fisher")
    assert chi2 == pytest.approx(reference.statistic, rel=1e-12)
    assert combined == pytest.approx(np.log10(reference.pvalue), rel=1e-10)
    assert fisher_log10(np.zeros(5)) == (0.0, 0.0)
    _, tiny = fisher_log10(np.full(32, -400.0))  # scipy's chi2.logsf returns -inf here
    assert np.isfinite(tiny) and -32 * 400 < tiny < -31 * 400


def test_spearman_matches_scipy_and_is_floored_at_one_over_n_factorial():
    rng = np.random.default_rng(3)
    x = np.arange(40)
    y = x.copy()
    y[:25] = rng.permutation(y[:25])
    rho, log10_p = spearman_log10(x, y)
    reference = stats.spearmanr(x, y, alternative="greater")
    assert rho == pytest.approx(reference.statistic)
    assert log10_p == pytest.approx(np.log10(reference.pvalue), rel=1e-9)
    assert spearman_log10(x, x) == (pytest.approx(1.0), pytest.approx(-log10_factorial(40)))
    assert log10_factorial(40) == pytest.approx(np.log10(float(math.factorial(40))))


def test_bonferroni_min():
    assert bonferroni_min_log10(np.log10([0.01, 0.5, 0.2])) == pytest.approx(np.log10(0.03))
    assert bonferroni_min_log10(np.log10([0.5, 0.9])) == 0.0


def test_exact_permutation_test_equals_enumeration():
    m = np.random.default_rng(0).normal(size=(6, 6))
    result = linear_permutation_test(m, n_resamples=9999, seed=1, unit="layers")
    every = np.array([m[np.arange(6), list(p)].sum() for p in itertools.permutations(range(6))])
    assert result.null.kind == EXACT and result.null.size == 720
    assert result.statistic == pytest.approx(np.trace(m))
    assert result.pvalue == pytest.approx(np.mean(every >= np.trace(m) - 1e-12))
    assert np.allclose(np.sort(result.null_distribution), np.sort(every))
    assert result.tail is None  # nothing beyond an enumerated null
    assert 10 ** result.null.min_log10_pvalue == pytest.approx(np.mean(every >= every.max() - 1e-12))
    mean, var = hoeffding_moments(m)
    assert mean == pytest.approx(every.mean()) and var == pytest.approx(every.var())


def test_monte_carlo_permutation_test_combines_draws_and_a_conservative_bound():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(30, 30)) + 3 * np.eye(30)
    result = linear_permutation_test(m, n_resamples=999, seed=7, unit="coordinates")
    exceed = np.count_nonzero(result.null_distribution >= result.statistic)
    assert result.null.kind == MONTE_CARLO and result.null.size == 999 and result.null.seed == 7
    assert 10 ** result.null.monte_carlo_log10_pvalue == pytest.approx((1 + exceed) / 1000)
    assert result.null.bound_log10_pvalue == pytest.approx(tail_bound_log10(m, np.trace(m)))
    assert exceed == 0  # so the bound may replace the Monte Carlo floor
    assert result.pvalue == pytest.approx(min(1 / 1000, 10 ** result.null.bound_log10_pvalue))
    assert "Cantelli" in result.null.bound and "Chatterjee" in result.null.bound
    # the true floor: the bound at the largest attainable statistic, or the Monte Carlo floor
    top = max_statistic(m)
    assert top >= np.trace(m)
    assert result.null.min_log10_pvalue == pytest.approx(min(-3.0, tail_bound_log10(m, top)))
    # a statistic inside the null: the Monte Carlo p, whatever the bound
    weak = linear_permutation_test(rng.normal(size=(30, 30)), n_resamples=999, seed=7, unit="coordinates")
    assert weak.log10_pvalue == weak.null.monte_carlo_log10_pvalue > -3.0
    again = linear_permutation_test(m, n_resamples=999, seed=7, unit="coordinates")
    assert np.array_equal(result.null_distribution, again.null_distribution)


def test_the_bound_reaches_below_the_monte_carlo_floor_far_out():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(200, 200)) + 20 * np.eye(200)  # trace ~ 4000 against a null sd of ~ 14
    result = linear_permutation_test(m, n_resamples=999, seed=1, unit="coordinates")
    assert result.null.monte_carlo_log10_pvalue == pytest.approx(-3.0)
    assert result.log10_pvalue < -10  # the deterministic bound, not the 1/1000 floor
    assert result.log10_pvalue == pytest.approx(result.null.bound_log10_pvalue)


@pytest.mark.parametrize("seed", range(6))
def test_tail_bound_is_never_below_the_exact_pvalue(seed):
    rng = np.random.default_rng(seed)
    n = 5 + seed % 3
    m = rng.normal(size=(n, n)) * rng.uniform(0.1, 3) + rng.uniform(0, 3) * np.eye(n)
    if seed % 2:
        m = np.abs(m) ** 3  # skewed entries
    every = np.array([m[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n))])
    mean, var = hoeffding_moments(m)
    assert mean == pytest.approx(every.mean()) and var == pytest.approx(every.var())
    for t in np.unique(every):
        exact = np.mean(every >= t - 1e-12)
        assert 10 ** tail_bound_log10(m, t) >= exact - 1e-12
        assert 10 ** cantelli_log10(t - mean, var) >= exact - 1e-12
        assert 10 ** chatterjee_log10(m, t) >= exact - 1e-12
    assert max_statistic(m) == pytest.approx(every.max())


def test_model_based_tail_is_hidden_when_the_normal_does_not_fit():
    m = np.zeros((40, 40))
    m[0, 0] = 1.0  # T is 1 with probability 1/40, else 0: nothing like a normal
    result = linear_permutation_test(m, n_resamples=999, seed=2, unit="coordinates")
    assert result.tail is None
    m = np.random.default_rng(1).normal(size=(60, 60))
    assert linear_permutation_test(m, n_resamples=999, seed=2, unit="coordinates").tail is not None


def test_seeded_streams_are_pure_functions_of_seed_and_key():
    a = seeded_subset(1000, 50, 3, "pcs", "layers.0.attn.q", [64, 32])
    assert np.array_equal(a, seeded_subset(1000, 50, 3, "pcs", "layers.0.attn.q", [64, 32]))
    assert not np.array_equal(a, seeded_subset(1000, 50, 4, "pcs", "layers.0.attn.q", [64, 32]))
    assert not np.array_equal(a, seeded_subset(1000, 50, 3, "pcs", "layers.1.attn.q", [64, 32]))
    assert len(set(a)) == 50 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert np.array_equal(seeded_subset(10, 50, 3, "x"), np.arange(10))
    assert derive_seed(0, "test", "pcs") != derive_seed(0, "test", "norm")
    ranks = hash_rank(1, ["a", "b", "c"])
    assert ranks[1] == hash_rank(1, ["x", "b"])[1]
    assert ranks[1] != hash_rank(2, ["b"])[0]
