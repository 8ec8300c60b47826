"""From per-method p-values to one pre-declared decision.

Each method contributes at most one p-value, chosen before looking at the
data: its within-pair test when that test is exact under H0 and its
calibration holds, else its empirical p-value against a *comparable* baseline
population.  Methods that are uncalibrated, miscalibrated, not applicable or
without a comparable population are shown but do not count.

The decision is Holm's step-down procedure over the counting methods (its
first step is Bonferroni's min-p): "derived" when the smallest Holm-adjusted
p-value is at most alpha.  Holm controls the family-wise error under *any*
dependence between the methods, which read the same weights, and a method
that sees nothing (p = 1) can only raise k by one: it can never veto a method
whose p is at most alpha/k.  A combined p-value (Cauchy combination) is shown
beside the decision, never as it: the Cauchy statistic maps any p = 1 to
tan(-pi/2) = -infinity and so lets one blind method veto the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from audit.evidence.combine import cauchy_combination, holm_log10
from audit.stats import format_pvalue

DERIVED = "derived"
NOT_REJECTED = "not-rejected"
INCONCLUSIVE = "inconclusive"
EXPLORATORY = "exploratory"
DECISION_RULE = "Holm step-down over the counting methods (family-wise error <= alpha under any dependence)"


@dataclass(frozen=True)
class Vote:
    """What one method brings to the verdict."""

    method: str
    counts: bool
    log10_pvalue: float | None  # the p-value that counts (None when the method does not count)
    source: str | None  # "within-pair exact test" or "baseline population (empirical)"
    reason: str
    min_log10_pvalue: float | None = None  # the true smallest p the counted test can reach


@dataclass(frozen=True)
class Verdict:
    """The decision (Holm) and, beside it, a combined p-value that does not decide."""

    label: str
    reason: str
    alpha: float
    log10_pvalue: float | None  # smallest Holm-adjusted p (= Bonferroni min-p): what decides
    combination: str  # the decision rule
    deciding: tuple[str, ...]  # the counting methods (k = their number)
    holm_log10: Mapping[str, float] = field(default_factory=dict)
    power: Mapping[str, Any] = field(default_factory=dict)  # held-out power per method (rate, 95% interval, n)
    combined_log10: float | None = None  # Cauchy combination, shown beside, never decisive
    rejected: tuple[str, ...] = ()  # methods whose Holm-adjusted p <= alpha

    @property
    def pvalue(self) -> float | None:
        return None if self.log10_pvalue is None else 10.0 ** self.log10_pvalue

    @property
    def headline(self) -> str:
        return {
            DERIVED: "Evidence against independent training",
            NOT_REJECTED: "Not enough evidence to reject independent training",
            INCONCLUSIVE: "Inconclusive",
            EXPLORATORY: "Exploratory analysis: no verdict",
        }[self.label]


def decide(votes: list[Vote], alpha: float, power: Mapping[str, Any] | None = None) -> Verdict:
    """The verdict at ``alpha`` from the methods' votes (see the module docstring)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie strictly between 0 and 1")
    counting = [v for v in votes if v.counts and v.log10_pvalue is not None]
    power = {k: v for k, v in (power or {}).items() if any(c.method == k for c in counting)}
    if not counting:
        reasons = "; ".join(f"{v.method}: {v.reason}" for v in votes) or "no method was run"
        return Verdict(INCONCLUSIVE, f"no method counts as evidence for this pair ({reasons})", alpha, None,
                       DECISION_RULE, (), {}, power)
    log10_p = np.array([v.log10_pvalue for v in counting])
    names = tuple(v.method for v in counting)
    holm = dict(zip(names, holm_log10(log10_p)))
    decisive = float(min(holm.values()))
    combined = cauchy_combination(log10_p) if len(counting) > 1 else float(log10_p[0])
    threshold = math.log10(alpha)
    rejected = tuple(name for name in names if holm[name] <= threshold)
    k = len(counting)
    if rejected:
        strongest = min(holm, key=holm.get)
        return Verdict(DERIVED, f"Holm over {k} method(s): {', '.join(rejected)} reject(s) independence at alpha = "
                                f"{alpha:g}; strongest: {strongest} (p = {format_pvalue(float(log10_p[names.index(strongest)]))}, "
                                f"adjusted p = {format_pvalue(holm[strongest])})",
                       alpha, decisive, DECISION_RULE, names, holm, power, combined, rejected)
    level = threshold - math.log10(k)
    floors = [v.min_log10_pvalue for v in counting]
    if all(f is not None and f > level for f in floors):
        return Verdict(INCONCLUSIVE, f"no counting method can reach alpha/k = {alpha / k:.3g} (smallest attainable "
                                     f"p-values {', '.join(f'{10 ** f:.3g}' for f in floors)}): the tests or the "
                                     "population are too small", alpha, decisive, DECISION_RULE, names, holm, power, combined)
    return Verdict(NOT_REJECTED, f"smallest Holm-adjusted p = {format_pvalue(decisive)} > alpha = {alpha:g} over {k} "
                                 "method(s); this is not proof of independence", alpha, decisive, DECISION_RULE, names, holm,
                   power, combined)


def exploratory(verdict: Verdict, why: str) -> Verdict:
    """The same numbers, labelled exploratory: no verdict (the analysis was not the pre-registered plan)."""
    return Verdict(EXPLORATORY, f"exploratory, no verdict: {why} (would have been: {verdict.label})", verdict.alpha,
                   verdict.log10_pvalue, verdict.combination, verdict.deciding, verdict.holm_log10, verdict.power,
                   verdict.combined_log10, verdict.rejected)
