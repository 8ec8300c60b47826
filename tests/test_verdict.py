"""The verdict from method votes: counting rules, Holm, Cauchy, the three outcomes."""

from __future__ import annotations

import math

import pytest

from audit.evidence import DERIVED, INCONCLUSIVE, NOT_REJECTED, Vote, cauchy_combination, decide


def _vote(name, log10_p, counts=True, floor=-6.0):
    return Vote(name, counts, log10_p if counts else None, "test" if counts else None, "r", floor)


def test_strong_evidence_is_derived_and_names_the_strongest_method():
    verdict = decide([_vote("a", -40.0), _vote("b", -0.5), _vote("c", None, counts=False)], alpha=0.01)
    assert verdict.label == DERIVED and verdict.deciding == ("a", "b")
    assert verdict.log10_pvalue == pytest.approx(cauchy_combination([-40.0, -0.5]))
    assert verdict.holm_log10["a"] == pytest.approx(-40 + math.log10(2))
    assert "strongest: a" in verdict.reason


def test_weak_evidence_is_not_rejected_and_never_called_independent():
    verdict = decide([_vote("a", -1.0), _vote("b", -0.3)], alpha=0.01)
    assert verdict.label == NOT_REJECTED
    assert "not proof of independence" in verdict.reason
    assert verdict.headline == "Not enough evidence to reject independent training"


def test_nothing_counts_is_inconclusive():
    verdict = decide([_vote("a", None, counts=False)], alpha=0.01)
    assert verdict.label == INCONCLUSIVE and verdict.log10_pvalue is None


def test_population_too_small_to_reach_alpha_is_inconclusive():
    verdict = decide([_vote("a", -1.2, floor=-1.2)], alpha=0.01)
    assert verdict.label == INCONCLUSIVE and "too small" in verdict.reason
    assert verdict.combination == "single method" and verdict.log10_pvalue == -1.2


def test_alpha_boundary_is_inclusive():
    assert decide([_vote("a", -2.0)], alpha=0.01).label == DERIVED
    with pytest.raises(ValueError):
        decide([_vote("a", -2.0)], alpha=1.5)
