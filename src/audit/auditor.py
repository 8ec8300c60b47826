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
from audit.baselines import PairTable, Population
from audit.compare import Comparison, MethodOutcome, canonical, compare_against, compare_models, format_table
from audit.errors import InputError
from audit.evidence import (
    Calibration,
    PopulationTest,
    Verdict,
    Vote,
    bh_log10,
    calibrate,
    decide,
    leave_pair_models_out,
    population_test,
)
from audit.methods import Method, get_method
from audit.stats import format_pvalue
from audit.text import columns

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
    body_verdict: Verdict  # the same decision without methods that read embeddings

    def to_dict(self) -> dict:
        doc = self.comparison.to_dict()
        for entry, evidence in zip(doc["methods"], self.evidence):
            entry |= evidence.to_dict(self.verdict.holm_log10)
        if self.baseline is not None:
            base = self.baseline
            doc["baseline"] = {
                "name": base.name, "path": str(base.root), "digest": base.digest, "seed": base.seed, "size": len(base.members),
                "members": sorted(base.members), "description": base.description,
                "pairs": {e.outcome.method.name: e.population.n_pairs for e in self.evidence if e.population},
            }
        verdict = self.verdict
        doc["alpha"] = verdict.alpha
        doc["decision"] = {"rule": verdict.combination, "k": len(verdict.deciding), "pvalue": verdict.pvalue,
                           "log10_pvalue": verdict.log10_pvalue, "rejected": list(verdict.rejected)}
        doc["combined"] = {"method": "cauchy combination (shown beside the decision; never decides)",
                           "log10_pvalue": verdict.combined_log10,
                           "pvalue": None if verdict.combined_log10 is None else 10.0 ** verdict.combined_log10}
        body = self.body_verdict
        doc["verdict"] = {"label": verdict.label, "headline": verdict.headline, "reason": verdict.reason,
                          "deciding": list(verdict.deciding), "power": dict(verdict.power),
                          "body_only": {"label": body.label, "log10_pvalue": body.log10_pvalue,
                                        "deciding": list(body.deciding), "reason": body.reason}}
        return doc

    def to_json(self) -> str:
        return json.dumps(canonical(self.to_dict()), sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write_json(self, path: str | Path) -> Path:
        return write_atomic(path, self.to_json().encode())


def _population(baseline: Population | str | Path | None) -> Population | None:
    return Population.open(baseline) if isinstance(baseline, (str, Path)) else baseline


def population_calibration(method_exact: bool, table: PairTable, alpha: float, n_models: int) -> tuple[Calibration, str]:
    """The calibration screen of one method on a population: within-pair p-values of its pairs for exact
    methods, leave-the-pair's-models-out empirical p-values otherwise."""
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
        checked = ("calibration checked on the baseline population" if calibration
                   else "calibration not checked (no baseline, or no comparable baseline pairs)")
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
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> Audit:
    """Compare ``path_a`` and ``path_b``; with a baseline, weigh every method against it and decide.

    ``params`` overrides method parameters (not with a baseline, whose
    fingerprints were made with the defaults).
    """
    base = _population(baseline)
    return assess(compare_models(path_a, path_b, methods, _audit_seed(base, seed, params, alpha), params), base, alpha)


def _audit_seed(base: Population | None, seed: int | None, params: Mapping | None, alpha: float) -> int:
    """The seed an audit must use, after checking its options against the baseline."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie strictly between 0 and 1, not {alpha}")
    if base is None:
        return 0 if seed is None else seed
    if seed is not None and seed != base.seed:
        raise InputError(f"baseline '{base.name}' was fingerprinted with seed {base.seed}; use --seed {base.seed} "
                         "(sampled positions must match) or rebuild the baseline")
    if params:
        raise InputError("method parameters cannot be changed with a baseline: its fingerprints use the defaults")
    return base.seed


def assess(comparison: Comparison, base: Population | None, alpha: float = DEFAULT_ALPHA) -> Audit:
    """Weigh a finished comparison against the population (if any) and decide."""
    excluded = set()
    if base is not None:
        excluded = {name for m in comparison.models if (name := base.member_with(m.sha256))}
    evidence = []
    for outcome in comparison.outcomes:
        population = calibration = scheme = comparability = None
        if base is not None and outcome.result is not None:
            table = base.pair_table(outcome.method.name).without(excluded)
            if table.statistics.size:
                population = population_test(outcome.result.statistic, table.statistics, pair_models=list(table.pairs),
                                             transform=_transform(outcome.method))
                calibration, scheme = population_calibration(outcome.method.exact, table, alpha, population.n_models or 0)
                comparability = _comparability(comparison, base, table.pairs)
        evidence.append(MethodEvidence(outcome, population, calibration, scheme, comparability,
                                       _vote(outcome, population, calibration)))
    power = _power(base, alpha)
    verdict = decide([e.vote for e in evidence], alpha, power)
    body = decide([e.vote for e in evidence if not e.outcome.method.reads_embeddings], alpha, power)
    return Audit(comparison, base, tuple(evidence), verdict, body)


def _transform(method: Method) -> str:
    return "fisher-z" if method.correlation else "identity"


def _power(base: Population | None, alpha: float) -> dict[str, float]:
    """TPR of each method at ``alpha`` on the zoo's derived pairs, when the baseline ships it."""
    if base is None or not (base.root / "power.json").is_file():
        return {}
    data = json.loads((base.root / "power.json").read_text())
    return {name: float(rates[f"{alpha:g}"]) for name, rates in data.get("tpr_at_alpha", {}).items() if f"{alpha:g}" in rates}


def format_audit(audit: Audit) -> str:
    """The population, calibration and verdict lines `audit compare --baseline` prints under the method table."""
    lines = [format_table(audit.comparison), ""]
    if audit.baseline is not None:
        lines.append(f"baseline: {audit.baseline.name} ({len(audit.baseline.members)} models, seed {audit.baseline.seed})")
        header = ("method", "population p", "model-based p", "pairs", "calibration", "counts")
        rows = []
        for e in audit.evidence:
            pop, cal = e.population, e.calibration
            rows.append((
                e.outcome.method.name,
                format_pvalue(pop.log10_pvalue) if pop else "-",
                format_pvalue(pop.tail.log10_pvalue) if pop and pop.tail else "-",
                str(pop.n_pairs) if pop else "-",
                ("ok" if cal.calibrated else "MISCALIBRATED") + f" {cal.false_positives}/{cal.n}" if cal else "-",
                (e.vote.source or "") if e.vote.counts else f"no: {e.vote.reason}",
            ))
        lines += columns(header, rows)
        lines.append("")
    v = audit.verdict
    decision = (f"smallest Holm-adjusted p = {format_pvalue(v.log10_pvalue)} over {len(v.deciding)} method(s)"
                if v.log10_pvalue is not None else "no counting method")
    if v.combined_log10 is not None and len(v.deciding) > 1:
        decision += f"; Cauchy combination {format_pvalue(v.combined_log10)} (shown, does not decide)"
    lines.append(f"verdict at alpha {v.alpha:g}: {v.label.upper()} - {v.headline}; {decision}")
    lines.append(f"  {v.reason}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Evaluation:
    """A reported number (no weights at hand) against a population's null."""

    method: str
    test: PopulationTest
    population: str
    population_depths: tuple[int, ...]
    case_depths: tuple[int, ...]
    comparable_pairs: int
    note: str


def evaluate_statistic(method: str, statistic: float, baseline: Population | str | Path,
                       depths: Sequence[int] = ()) -> Evaluation:
    """Where ``statistic`` falls among the population's pairs for ``method`` (e.g. attn-std 0.927)."""
    base = _population(baseline)
    chosen = get_method(method)  # a clear error for unknown names
    if chosen.correlation and not -1.0 <= statistic <= 1.0:
        raise InputError(f"{method} is a correlation; {statistic} is outside [-1, 1]")
    table = base.pair_table(method)
    if not table.statistics.size:
        raise InputError(f"baseline '{base.name}' has no comparable pairs for {method}")
    test = population_test(statistic, table.statistics, pair_models=list(table.pairs), transform=_transform(chosen))
    member_depths = tuple(sorted({int(base.members[m].architecture["depth"]) for pair in table.pairs for m in pair}))
    outside = [d for d in depths if not member_depths[0] <= d <= member_depths[-1]]
    if not depths:
        note = "no depths given for the case: comparability with the population is unknown"
    elif outside:
        note = (f"depth(s) {outside} lie outside the population's {member_depths[0]}-{member_depths[-1]} layers; "
                "depth-dependent statistics (attn-std) may have a different null there: treat the p-value as indicative")
    else:
        note = "the case's depths lie within the population's range"
    return Evaluation(method, test, base.name, member_depths, tuple(depths), test.n_pairs, note)


@dataclass(frozen=True)
class ScanRow:
    candidate: str
    audit: Audit
    bh_log10_pvalue: float | None


def scan(suspect: str | Path, candidates: Sequence[str | Path], baseline: Population | str | Path | None = None,
         methods: Sequence[str] | None = None, seed: int | None = None, alpha: float = DEFAULT_ALPHA) -> list[ScanRow]:
    """Audit ``suspect`` against each candidate; rank by combined p, Benjamini-Hochberg across candidates.

    The suspect is opened and fingerprinted once for all candidates.
    """
    base = _population(baseline)
    comparisons = compare_against(suspect, candidates, methods, _audit_seed(base, seed, None, alpha))
    audits = [assess(comparison, base, alpha) for comparison in comparisons]
    log10 = [a.verdict.log10_pvalue for a in audits]
    known = [i for i, p in enumerate(log10) if p is not None]
    adjusted: dict[int, float] = {}
    if known:
        adjusted = dict(zip(known, bh_log10(np.array([log10[i] for i in known]))))
    rows = [ScanRow(str(c), a, adjusted.get(i)) for i, (c, a) in enumerate(zip(candidates, audits))]
    return sorted(rows, key=lambda r: (r.bh_log10_pvalue is None, r.bh_log10_pvalue if r.bh_log10_pvalue is not None else 0.0))


def format_evaluation(result: Evaluation) -> str:
    test = result.test
    lines = [
        f"{result.method} = {test.statistic:g} against population '{result.population}' "
        f"({test.n_pairs} independent pairs of {test.n_models} models)",
        f"empirical p = {test.pvalue:.4g} ({test.exceedances} pair(s) at least as similar; smallest attainable {test.min_pvalue:.4g})",
    ]
    if test.tail is not None:
        lines.append(f"model-based p = {format_pvalue(test.tail.log10_pvalue)} (normal fitted to the {test.tail.transform} "
                     f"null; {test.tail.gof_test} p = {test.tail.gof_pvalue:.3g})")
    quantiles = np.quantile(test.null_distribution, [0.5, 0.95, 0.99])
    lines.append(f"null: median {quantiles[0]:.4f}, 95% {quantiles[1]:.4f}, 99% {quantiles[2]:.4f}, max {test.null_distribution.max():.4f}")
    lines.append(f"comparability: population depths {list(result.population_depths)}; {result.note}")
    return "\n".join(lines)


def format_scan(rows: list[ScanRow], alpha: float) -> str:
    header = ("rank", "candidate", "combined p", "BH-adjusted p", "verdict")
    table = [(str(i + 1), r.candidate, format_pvalue(r.audit.verdict.log10_pvalue) if r.audit.verdict.log10_pvalue is not None else "-",
              format_pvalue(r.bh_log10_pvalue) if r.bh_log10_pvalue is not None else "-",
              r.audit.verdict.label + (" (BH <= alpha)" if r.bh_log10_pvalue is not None and r.bh_log10_pvalue <= math.log10(alpha) else ""))
             for i, r in enumerate(rows)]
    lines = columns(header, table)
    lines.append(f"Benjamini-Hochberg controls the false discovery rate across the {len(rows)} candidates at alpha {alpha:g}.")
    return "\n".join(lines)
