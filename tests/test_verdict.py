"""The verdict from method votes: Holm decides, Cauchy is shown beside, no blind method can veto."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from audit.evidence import DERIVED, EXPLORATORY, INCONCLUSIVE, NOT_REJECTED, Vote, cauchy_combination, decide, exploratory


def _vote(name, log10_p, counts=True, floor=-6.0):
    return Vote(name, counts, log10_p if counts else None, "test" if counts else None, "r", floor)


def test_strong_evidence_is_derived_and_names_the_strongest_method():
    verdict = decide([_vote("a", -40.0), _vote("b", -0.5), _vote("c", None, counts=False)], alpha=0.01)
    assert verdict.label == DERIVED and verdict.deciding == ("a", "b") and verdict.rejected == ("a",)
    assert verdict.holm_log10["a"] == pytest.approx(-40 + math.log10(2))
    assert verdict.log10_pvalue == pytest.approx(-40 + math.log10(2))  # Bonferroni min-p decides
    assert verdict.combined_log10 == pytest.approx(cauchy_combination([-40.0, -0.5]))  # shown beside
    assert "strongest: a" in verdict.reason


def test_holm_matches_statsmodels():
    p = np.array([0.0004, 0.03, 0.2, 0.011, 1.0])
    verdict = decide([_vote(f"m{i}", math.log10(x)) for i, x in enumerate(p)], alpha=0.05)
    reject, adjusted, _, _ = multipletests(p, alpha=0.05, method="holm")
    assert [10 ** verdict.holm_log10[f"m{i}"] for i in range(5)] == pytest.approx(list(adjusted), rel=1e-9)
    assert verdict.rejected == tuple(f"m{i}" for i in range(5) if reject[i])


def test_a_method_with_p_one_cannot_veto():
    """The function-identical copy of issue 11: norm and pcs at 1e-4, attn-std's population p = 1."""
    votes = [_vote("norm", -4.0), _vote("pcs", -4.0), _vote("attn-std", 0.0), _vote("neuron-match", -0.2),
             _vote("attn-std-detrended", -0.1)]
    verdict = decide(votes, alpha=0.01)
    assert verdict.label == DERIVED
    assert 10 ** verdict.log10_pvalue == pytest.approx(5e-4)  # Holm: 5 x 1e-4
    assert verdict.combined_log10 > math.log10(0.01)  # the Cauchy combination would have vetoed it


@pytest.mark.parametrize("seed", range(5))
def test_adding_blind_or_uniform_methods_never_turns_derived_into_not_rejected(seed):
    rng = np.random.default_rng(seed)
    alpha = 0.01
    for _ in range(200):
        k = int(rng.integers(1, 6))
        added = int(rng.integers(1, 4))
        log10_p = list(np.log10(rng.uniform(size=k)))
        blind = [0.0 if rng.uniform() < 0.5 else math.log10(rng.uniform()) for _ in range(added)]
        strong = float(np.log10(alpha / (1 + k + added)) - rng.uniform(0, 30))  # p <= alpha / k_total
        before = decide([_vote(f"m{i}", p) for i, p in enumerate([strong, *log10_p])], alpha)
        after = decide([_vote(f"m{i}", p) for i, p in enumerate([strong, *log10_p, *blind])], alpha)
        assert before.label == DERIVED and after.label == DERIVED


def test_weak_evidence_is_not_rejected_and_never_called_independent():
    verdict = decide([_vote("a", -1.0), _vote("b", -0.3)], alpha=0.01)
    assert verdict.label == NOT_REJECTED
    assert "not proof of independence" in verdict.reason
    assert verdict.headline == "Not enough evidence to reject independent training"


def test_nothing_counts_is_inconclusive():
    verdict = decide([_vote("a", None, counts=False)], alpha=0.01)
    assert verdict.label == INCONCLUSIVE and verdict.log10_pvalue is None


def test_floors_above_alpha_over_k_are_inconclusive():
    verdict = decide([_vote("a", -1.2, floor=-1.2)], alpha=0.01)
    assert verdict.label == INCONCLUSIVE and "too small" in verdict.reason
    assert verdict.log10_pvalue == -1.2
    # two methods each able to reach 0.008 but not 0.005 = alpha/2
    assert decide([_vote("a", -2.1, floor=-2.1), _vote("b", -2.1, floor=-2.1)], alpha=0.01).label == INCONCLUSIVE


def test_alpha_boundary_is_inclusive():
    assert decide([_vote("a", -2.0)], alpha=0.01).label == DERIVED
    with pytest.raises(ValueError):
        decide([_vote("a", -2.0)], alpha=1.5)


def test_exploratory_keeps_numbers_but_gives_no_verdict():
    verdict = exploratory(decide([_vote("a", -9.0)], alpha=0.01), "methods differ from the plan")
    assert verdict.label == EXPLORATORY and verdict.log10_pvalue == -9.0
    assert "no verdict" in verdict.reason and verdict.headline.startswith("Exploratory")
