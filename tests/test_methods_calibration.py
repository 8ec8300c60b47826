"""Calibration: independently random-initialised pairs give uniform p-values (KS over many disjoint pairs).

At i.i.d. initialisation every exchangeability assumption holds (layers,
residual coordinates, hidden units; gate and up rows independent), so every
method's p-value must be uniform here; on trained models only the exact
methods keep that guarantee (the zoo benchmark checks the rest).  Pairs are
disjoint so that their p-values are independent.
"""

from __future__ import annotations

import numpy as np
import pytest
from methods_support import build, load_model
from scipy import stats

from audit.methods import REGISTRY, get_method
from audit.testing.synth import Dims

PAIRS = 60
DIMS = Dims(layers=8, hidden=16, mlp=40, heads=2, vocab=48)
MOE = Dims(layers=8, hidden=16, mlp=40, heads=2, vocab=48, experts=3)


@pytest.fixture(scope="module")
def pvalues(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    models = [load_model(build(root / f"m{i}", 1000 + i, DIMS)) for i in range(2 * PAIRS)]
    out = {}
    for name in REGISTRY:
        method = get_method(name)
        prints = [method.extract(m, seed=5) for m in models]
        out[name] = np.array([method.test(prints[2 * i], prints[2 * i + 1], seed=i).pvalue for i in range(PAIRS)])
    return out


@pytest.mark.parametrize("method", list(REGISTRY))
def test_pvalues_of_independent_pairs_are_uniform(pvalues, method):
    p = pvalues[method]
    # A discrete exact null (a count of agreements) gives conservative p-values, never smaller than uniform.
    alternative = "greater" if REGISTRY[method].discrete else "two-sided"
    assert stats.kstest(p, "uniform", alternative=alternative).pvalue > 0.01, np.sort(p)
    assert np.count_nonzero(p <= 0.01) <= 3  # expected 0.6 of 60


def test_dense_against_moe_min_p_over_experts_is_not_anti_conservative(tmp_path):
    method = get_method("neuron-match")
    dense = [load_model(build(tmp_path / f"d{i}", 2000 + i, DIMS, "llama")) for i in range(40)]
    moe = [load_model(build(tmp_path / f"e{i}", 3000 + i, MOE, "mixtral")) for i in range(40)]
    p = np.array([method.test(method.extract(d, 0), method.extract(e, 0), 0).pvalue for d, e in zip(dense, moe)])
    # Bonferroni over experts is conservative: p-values must not be stochastically smaller than uniform.
    assert stats.kstest(p, "uniform", alternative="greater").pvalue > 0.01, np.sort(p)
