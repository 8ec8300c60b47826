"""The audit: compare two checkpoints, weigh each method against a baseline
population, and decide.  ``audit compare --baseline``, ``audit report`` and
``audit verify --recompute`` all run :func:`run_audit`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from audit.atomic import write_atomic
from audit.baselines import Population
from audit.compare import Comparison, MethodOutcome, canonical, compare_models
from audit.errors import InputError
from audit.evidence import (
    Calibration,
    PopulationTest,
    Verdict,
    Vote,
    calibrate,
    decide,
    leave_pair_models_out,
    population_test,
)

DEFAULT_ALPHA = 0.01
EXACT_SOURCE = "within-pair exact test"
POPULATION_SOURCE = "baseline population (empirical)"


@dataclass(frozen=True)
class MethodEvidence:
    """One method's result weighed against the population."""

    outcome: MethodOutcome
    population: PopulationTest | None
    calibration: Calibration | None
    calibration_scheme: str | None
    comparability: Mapping[str, Any] | None
    vote: Vote

    def to_dict(self, holm: Mapping[str, float]) -> dict:
        out: dict[str, Any] = {}
        if self.population is not None:
            pop = self.population
            out["population"] = {
                "statistic": pop.statistic, "pvalue": pop.pvalue, "log10_pvalue": pop.log10_pvalue,
                "min_pvalue": pop.min_pvalue, "n_pairs": pop.n_pairs, "n_models": pop.n_models,
                "disjoint_pairs": pop.disjoint_pairs, "exceedances": pop.exceedances,
                "null_values": [float(v) for v in pop.null_distribution],
                "tail": None if pop.tail is None else {**dataclasses.asdict(pop.tail), "label": "model-based"},
                "comparability": dict(self.comparability or {}),
            }
        if self.calibration is not None:
            cal = self.calibration
            out["calibration"] = {
                "scheme": self.calibration_scheme, "alpha": cal.alpha, "n": cal.n,
                "false_positives": cal.false_positives, "fpr": cal.fpr, "fpr_binomial_pvalue": cal.fpr_binomial_pvalue,
                "ks_statistic": cal.ks_statistic, "ks_pvalue": cal.ks_pvalue, "ks_smaller_pvalue": cal.ks_smaller_pvalue,
                "min_attainable": cal.min_attainable, "calibrated": cal.calibrated, "reason": cal.reason,
                "pvalues": [float(p) for p in cal.pvalues],
            }
        vote = self.vote
        out["vote"] = {"counts": vote.counts, "log10_pvalue": vote.log10_pvalue, "source": vote.source,
                       "reason": vote.reason, "holm_log10_pvalue": holm.get(vote.method)}
        return out


@dataclass(frozen=True)
class Audit:
    comparison: Comparison
    baseline: Population | None
    evidence: tuple[MethodEvidence, ...]
    verdict: Verdict

    def to_dict(self) -> dict:
        doc = self.comparison.to_dict()
        for entry, evidence in zip(doc["methods"], self.evidence):
            entry |= evidence.to_dict(self.verdict.holm_log10)
        if self.baseline is not None:
            base = self.baseline
            doc["baseline"] = {
                "name": base.name, "path": str(base.root), "seed": base.seed, "size": len(base.members),
                "members": sorted(base.members), "description": base.description,
                "pairs": {e.outcome.method.name: e.population.n_pairs for e in self.evidence if e.population},
            }
        verdict = self.verdict
        doc["alpha"] = verdict.alpha
        doc["combined"] = {"pvalue": verdict.pvalue, "log10_pvalue": verdict.log10_pvalue, "method": verdict.combination}
        doc["verdict"] = {"label": verdict.label, "headline": verdict.headline, "reason": verdict.reason,
                          "deciding": list(verdict.deciding), "power": dict(verdict.power)}
        return doc

    def to_json(self) -> str:
        return json.dumps(canonical(self.to_dict()), sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write_json(self, path: str | Path) -> Path:
        return write_atomic(path, self.to_json().encode())


def _calibration(method_exact: bool, table, alpha: float, n_models: int) -> tuple[Calibration, str]:
    if method_exact and table.log10_pvalues is not None:
        return calibrate(np.power(10.0, table.log10_pvalues), alpha), "within-pair p-values of all baseline pairs"
    remaining = max(n_models - 2, 0)
    floor = 1.0 / (1 + remaining * (remaining - 1) // 2)
    return (calibrate(leave_pair_models_out(table.statistics, list(table.pairs)), alpha, floor),
            "empirical p of each baseline pair against the pairs sharing neither of its models")


def _vote(outcome: MethodOutcome, population: PopulationTest | None, calibration: Calibration | None) -> Vote:
    method, result = outcome.method, outcome.result
    if result is None:
        return Vote(method.name, False, None, None, f"not applicable: {outcome.reason}")
    if calibration is not None and not calibration.calibrated:
        return Vote(method.name, False, None, None, f"miscalibrated on the baseline population: {calibration.reason}")
    if method.exact and method.calibrated:
        checked = "calibration checked on the baseline population" if calibration else "no baseline: calibration not checked"
        return Vote(method.name, True, result.log10_pvalue, EXACT_SOURCE, f"exact under H0; {checked}",
                    result.null.min_log10_pvalue)
    if population is None:
        return Vote(method.name, False, None, None,
                    "its within-pair test is not evidence of derivation; it needs a comparable baseline population")
    return Vote(method.name, True, population.log10_pvalue, POPULATION_SOURCE,
                "empirical p against the baseline population; calibration checked (leave-models-out)",
                math.log10(population.min_pvalue))


def _comparability(comparison: Comparison, base: Population, pairs: Sequence[tuple[str, str]]) -> dict:
    depths = sorted({int(base.members[m].architecture["depth"]) for pair in pairs for m in pair})
    widths = sorted({int(base.members[m].architecture["hidden"]) for pair in pairs for m in pair
                     if base.members[m].architecture.get("hidden")})
    return {"suspect_depths": [m.depth for m in comparison.models], "population_depths": depths,
            "population_widths": widths,
            "note": "same depth range" if all(d in depths for d in (m.depth for m in comparison.models))
            else "the suspects' depths lie outside the population's; the null may not describe them"}


def run_audit(
    path_a: str | Path,
    path_b: str | Path,
    baseline: Population | str | Path | None = None,
    methods: Sequence[str] | None = None,
    seed: int | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> Audit:
    """Compare ``path_a`` and ``path_b``; with a baseline, weigh every method against it and decide."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    base = Population.open(baseline) if isinstance(baseline, (str, Path)) else baseline
    if base is not None:
        if seed is not None and seed != base.seed:
            raise InputError(f"baseline '{base.name}' was fingerprinted with seed {base.seed}; use --seed {base.seed} "
                             "(sampled positions must match) or rebuild the baseline")
        seed = base.seed
    comparison = compare_models(path_a, path_b, methods, 0 if seed is None else seed)
    excluded = set()
    if base is not None:
        excluded = {name for m in comparison.models if (name := base.member_with(m.sha256))}
    evidence = []
    for outcome in comparison.outcomes:
        population = calibration = scheme = comparability = None
        if base is not None and outcome.result is not None:
            table = base.pair_table(outcome.method.name).without(excluded)
            if table.statistics.size:
                population = population_test(outcome.result.statistic, table.statistics, pair_models=list(table.pairs))
                calibration, scheme = _calibration(outcome.method.exact, table, alpha, population.n_models or 0)
                comparability = _comparability(comparison, base, table.pairs)
        evidence.append(MethodEvidence(outcome, population, calibration, scheme, comparability,
                                       _vote(outcome, population, calibration)))
    power = _power(base, alpha)
    verdict = decide([e.vote for e in evidence], alpha, power)
    return Audit(comparison, base, tuple(evidence), verdict)


def _power(base: Population | None, alpha: float) -> dict[str, float]:
    """TPR of each method at ``alpha`` on the zoo's derived pairs, when the baseline ships it."""
    if base is None or not (base.root / "power.json").is_file():
        return {}
    data = json.loads((base.root / "power.json").read_text())
    return {name: float(rates[f"{alpha:g}"]) for name, rates in data.get("tpr_at_alpha", {}).items() if f"{alpha:g}" in rates}
