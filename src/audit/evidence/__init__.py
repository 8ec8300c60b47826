"""Evidence: population nulls, calibration, multiple testing and the verdict.

Everything here works on p-values in log10 space as well as plain floats,
because the p-values of strongly related pairs underflow float64.
"""

from audit.evidence.calibration import Calibration, calibrate, leave_pair_models_out
from audit.evidence.combine import bh_log10, cauchy_combination, holm_log10
from audit.evidence.population import ParametricTail, PopulationTest, population_test
from audit.evidence.verdict import DERIVED, EXPLORATORY, INCONCLUSIVE, NOT_REJECTED, Verdict, Vote, decide, exploratory

__all__ = [
    "DERIVED",
    "EXPLORATORY",
    "INCONCLUSIVE",
    "NOT_REJECTED",
    "Calibration",
    "Verdict",
    "Vote",
    "decide",
    "exploratory",
    "ParametricTail",
    "PopulationTest",
    "bh_log10",
    "calibrate",
    "cauchy_combination",
    "holm_log10",
    "leave_pair_models_out",
    "population_test",
]
