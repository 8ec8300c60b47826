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

    def to_dict(self) -> dict:
        return {"kind": self.kind, "description": self.description, "size": self.size, "seed": self.seed,
                "min_log10_pvalue": self.min_log10_pvalue, "bound": self.bound,
                "monte_carlo_log10_pvalue": self.monte_carlo_log10_pvalue,
                "bound_log10_pvalue": self.bound_log10_pvalue}


@dataclass(frozen=True)
class Tail:
    """A model-based tail p-value, reported beside the empirical one, never instead of it."""

    log10_pvalue: float
    description: str

    def to_dict(self) -> dict:
        return {"log10_pvalue": self.log10_pvalue, "description": self.description}


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

    def to_dict(self) -> dict:
        """JSON-ready; the null distribution is summarised, not listed."""
        null = self.null.to_dict()
        if self.null_distribution is not None and self.null_distribution.size:
            values = np.asarray(self.null_distribution, dtype=np.float64)
            null["summary"] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                "max": float(values.max()),
                "quantiles": {q: float(np.quantile(values, float(q))) for q in ("0.5", "0.95", "0.99")},
            }
        return {
            "statistic": self.statistic,
            "pvalue": self.pvalue,
            "log10_pvalue": self.log10_pvalue,
            "null": null,
            "tail": self.tail.to_dict() if self.tail else None,
            "details": dict(self.details),
        }

