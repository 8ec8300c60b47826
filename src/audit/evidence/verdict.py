"""From per-method p-values to one pre-declared decision.

Each method contributes at most one p-value, chosen before looking at the
data: its within-pair test when that test is exact under H0 and its
calibration on the population holds, else its empirical p-value against the
baseline population when that is calibrated (leave-the-pair's-models-out).
Methods that are uncalibrated, miscalibrated or not applicable are shown but
do not count.  The counting p-values are Holm-adjusted (which method is
individually significant) and combined with the Cauchy combination test,
valid under the strong dependence between methods that read the same
weights; the combined p-value at the pre-declared alpha decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from audit.evidence.combine import cauchy_combination, holm_log10
from audit.stats import format_pvalue

DERIVED = "derived"
NOT_REJECTED = "not-rejected"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Vote:
    """What one method brings to the verdict."""

    method: str
    counts: bool
    log10_pvalue: float | None  # the p-value that counts (None when the method does not count)
    source: str | None  # "within-pair exact test" or "baseline population (empirical)"
    reason: str
    min_log10_pvalue: float | None = None  # smallest p the counted test can reach


@dataclass(frozen=True)
class Verdict:
    label: str
    reason: str
    alpha: float
    log10_pvalue: float | None
    combination: str
    deciding: tuple[str, ...]
    holm_log10: Mapping[str, float] = field(default_factory=dict)
    power: Mapping[str, float] = field(default_factory=dict)

    @property
    def pvalue(self) -> float | None:
        return None if self.log10_pvalue is None else 10.0 ** self.log10_pvalue

    @property
    def headline(self) -> str:
        return {
            DERIVED: "Evidence against independent training",
            NOT_REJECTED: "Not enough evidence to reject independent training",
            INCONCLUSIVE: "Inconclusive",
        }[self.label]


def decide(votes: list[Vote], alpha: float, power: Mapping[str, float] | None = None) -> Verdict:
    """The verdict at ``alpha`` from the methods' votes (see the module docstring)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie strictly between 0 and 1")
    counting = [v for v in votes if v.counts and v.log10_pvalue is not None]
    power = {k: v for k, v in (power or {}).items() if any(c.method == k for c in counting)}
    if not counting:
        reasons = "; ".join(f"{v.method}: {v.reason}" for v in votes) or "no method was run"
        return Verdict(INCONCLUSIVE, f"no method counts as evidence for this pair ({reasons})", alpha, None,
                       "none", (), {}, power)
    log10_p = np.array([v.log10_pvalue for v in counting])
    holm = dict(zip((v.method for v in counting), holm_log10(log10_p)))
    combined = cauchy_combination(log10_p) if len(counting) > 1 else float(log10_p[0])
    combination = "cauchy" if len(counting) > 1 else "single method"
    names = tuple(v.method for v in counting)
    threshold = math.log10(alpha)
    if combined <= threshold:
        strongest = min(holm, key=holm.get)
        return Verdict(DERIVED, f"combined p = {format_pvalue(combined)} <= alpha = {alpha:g} over {len(counting)} "
                                f"method(s); strongest: {strongest} (Holm-adjusted p = {format_pvalue(holm[strongest])})",
                       alpha, combined, combination, names, holm, power)
    floors = [v.min_log10_pvalue for v in counting]
    if all(f is not None and f > threshold for f in floors):
        return Verdict(INCONCLUSIVE, f"no counting method can reach alpha = {alpha:g} (smallest attainable p-values "
                                     f"{', '.join(f'{10 ** f:.3g}' for f in floors)}): the population is too small",
                       alpha, combined, combination, names, holm, power)
    return Verdict(NOT_REJECTED, f"combined p = {format_pvalue(combined)} > alpha = {alpha:g} over {len(counting)} method(s); "
                                 "this is not proof of independence", alpha, combined, combination, names, holm, power)
