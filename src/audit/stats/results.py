"""Test results in the style of ``scipy.stats.permutation_test``, plus how the null was made.

p-values are carried as log10 because the p-values of strongly related pairs
underflow float64 (``pvalue`` is then 0.0 while ``log10_pvalue`` stays exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

EXACT = "exact-permutation"
MONTE_CARLO = "monte-carlo-permutation"
PARAMETRIC = "parametric"


@dataclass(frozen=True)
class Null:
    """How the null distribution was made.

    ``size``: permutations enumerated (exact), resamples drawn (Monte Carlo) or
    None (parametric).  ``seed``: the derived seed of the random stream, so a
    Monte Carlo null can be replayed.  ``min_log10_pvalue``: the smallest p the
    test can give (log10): its true smallest attainable value, computed from
    the test's construction, never the smallest one observed.  ``bound``: the
    inequality behind a conservative tail bound, when one is used, with the
    two p-values it was combined from.
    """

    kind: str
    description: str
    size: int | None = None
    seed: int | None = None
    min_log10_pvalue: float | None = None
    bound: str | None = None
    monte_carlo_log10_pvalue: float | None = None
    bound_log10_pvalue: float | None = None


@dataclass(frozen=True)
class Tail:
    """A model-based tail p-value, reported beside the empirical one, never instead of it."""

    log10_pvalue: float
    description: str


@dataclass(frozen=True)
class TestResult:
    """Statistic, one-sided (upper tail) p-value and the null it came from."""

    __test__ = False  # not a pytest class

    statistic: float
    log10_pvalue: float
    null: Null
    null_distribution: np.ndarray | None = None
    tail: Tail | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pvalue(self) -> float:
        return 10.0 ** self.log10_pvalue
