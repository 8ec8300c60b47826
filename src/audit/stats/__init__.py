"""Shared statistics: result objects, log-space p-values, permutation tests, seeded streams."""

from audit.stats.permutation import hoeffding_moments, linear_permutation_test
from audit.stats.pvalues import (
    LN10,
    bonferroni_min_log10,
    fisher_log10,
    format_pvalue,
    log10_factorial,
    log_t_sf,
    spearman_log10,
)
from audit.stats.results import EXACT, MONTE_CARLO, PARAMETRIC, Null, Tail, TestResult
from audit.stats.seeding import derive_seed, generator, hash_rank, seeded_subset

__all__ = [
    "EXACT",
    "LN10",
    "MONTE_CARLO",
    "PARAMETRIC",
    "Null",
    "Tail",
    "TestResult",
    "bonferroni_min_log10",
    "derive_seed",
    "fisher_log10",
    "format_pvalue",
    "generator",
    "hash_rank",
    "hoeffding_moments",
    "linear_permutation_test",
    "log10_factorial",
    "log_t_sf",
    "seeded_subset",
    "spearman_log10",
]
