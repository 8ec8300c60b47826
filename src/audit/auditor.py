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
from audit.compare import (
    Comparison,
    MethodOutcome,
    ModelInfo,
    canonical,
    compare_against,
    compare_models,
    format_table,
    method_list,
)
from audit.errors import InputError, NoComparablePopulation
from audit.evidence import (
    EXPLORATORY,
    Calibration,
    PopulationTest,
    Verdict,
    Vote,
    bh_log10,
    calibrate,
    decide,
    exploratory,
    leave_pair_models_out,
    population_test,
)
from audit.evidence.calibration import GroupRate, held_out_groups, member_groups
from audit.evidence.comparability import ComparabilityRule, Shape, apply_rule
from audit.evidence.plan import Plan, make_plan, plan_summary
from audit.methods import Method, get_method
from audit.stats import format_pvalue
from audit.text import columns

DEFAULT_ALPHA = 0.01
EXACT_SOURCE = "within-pair exact test"
POPULATION_SOURCE = "baseline population (empirical)"
NO_COMPARABLE = "no comparable population"
NO_PLAN = "no pre-registered analysis plan"


@dataclass(frozen=True)
class MethodEvidence:
    """One method's result weighed against the comparable part of the population."""

    outcome: MethodOutcome
    population: PopulationTest | None
    calibration: Calibration | None
    comparability: Mapping[str, Any] | None
    vote: Vote

    def to_dict(self, holm: Mapping[str, float]) -> dict:
        out: dict[str, Any] = {}
        if self.comparability is not None:
            out["comparability"] = dict(self.comparability)
        if self.population is not None:
            pop = self.population
            out["population"] = {
                "statistic": pop.statistic, "pvalue": pop.pvalue, "log10_pvalue": pop.log10_pvalue,
                "min_pvalue": pop.min_pvalue, "n_pairs": pop.n_pairs, "effective_pairs": pop.effective_pairs,
                "n_models": pop.n_models, "disjoint_pairs": pop.disjoint_pairs, "exceedances": pop.exceedances,
                "null_values": [float(v) for v in pop.null_distribution],
                "tail": None if pop.tail is None else {**dataclasses.asdict(pop.tail), "label": "model-based"},
                "tail_note": pop.tail_note,
            }
        if self.calibration is not None:
            cal = self.calibration
            worst = cal.worst
            out["calibration"] = {
                "scheme": cal.scheme, "alpha": cal.alpha, "n": cal.n,
                "false_positives": cal.false_positives, "fpr": cal.fpr, "fpr_binomial_pvalue": cal.fpr_binomial_pvalue,
                "ks_statistic": cal.ks_statistic, "ks_pvalue": cal.ks_pvalue, "ks_smaller_pvalue": cal.ks_smaller_pvalue,
                "min_attainable": cal.min_attainable, "calibrated": cal.calibrated, "reason": cal.reason,
                "groups": [g.to_dict() for g in cal.groups], "worst_group": None if worst is None else worst.to_dict(),
                "pvalues": [float(p) for p in cal.pvalues],
            }
        vote = self.vote
        out["vote"] = {"counts": vote.counts, "log10_pvalue": vote.log10_pvalue, "source": vote.source,
                       "reason": vote.reason, "min_log10_pvalue": vote.min_log10_pvalue,
                       "holm_log10_pvalue": holm.get(vote.method)}
        return out


@dataclass(frozen=True)
class Audit:
    comparison: Comparison
    baseline: Population | None
    evidence: tuple[MethodEvidence, ...]
    verdict: Verdict
    body_verdict: Verdict  # the same decision without methods that read embeddings
    rule: ComparabilityRule = ComparabilityRule()
    plan: Plan | None = None
    exploratory: tuple[str, ...] = ()  # why this analysis is not the pre-registered one (empty: it is)

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
        doc["plan"] = None if self.plan is None else dict(plan_summary(self.plan))
        doc["exploratory"] = list(self.exploratory) or None
        doc["comparability_rule"] = {**self.rule.to_dict(), "description": self.rule.describe()}
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


def population_calibration(method: Method, table: PairTable, alpha: float, floor_log10: float | None,
                           groupings: Mapping[str, Mapping[str, str]]) -> Calibration:
    """Calibration of one method on the comparable pairs, across the population's recorded groups.

    Exact methods: their within-pair p-values of the pairs, grouped (floor: the test's own).
    Others: each group's pairs against the pairs of the members outside it (leave one group out).
    """
    pairs = list(table.pairs)
    own = None if not (method.exact and table.log10_pvalues is not None) else np.power(10.0, table.log10_pvalues)
    own_floor = 10.0 ** floor_log10 if floor_log10 is not None else 0.0
    rates, pooled = [], []
    for grouping, labels in groupings.items():
        if len(set(labels[m] for pair in pairs for m in pair)) < 2:
            continue  # one group only: nothing to leave out
        for group, pvalues, floor in held_out_groups(table.statistics, pairs, labels, own, own_floor):
            rates.append(GroupRate(grouping, group, int(pvalues.size), int(np.count_nonzero(pvalues <= alpha)), floor))
            pooled.append(pvalues)
    if own is not None:
        return calibrate(own, alpha, min_attainable=own_floor, groups=rates,
                         scheme="within-pair p-values of the comparable baseline pairs, by recorded group")
    if pooled:
        floor = min(g.min_attainable for g in rates)
        return calibrate(np.concatenate(pooled), alpha, min_attainable=floor, groups=rates,
                         scheme="leave one group out: each recorded group's pairs against the other members' pairs "
                                "(shape and origin groupings pooled)")
    remaining = max(len({m for pair in pairs for m in pair}) - 2, 0)
    return calibrate(leave_pair_models_out(table.statistics, pairs), alpha,
                     min_attainable=1.0 / (1 + remaining * (remaining - 1) // 2),
                     scheme="fallback, the population records a single group: each pair against the pairs sharing "
                            "neither of its models (this cannot show a shift between populations)")


def _vote(outcome: MethodOutcome, population: PopulationTest | None, calibration: Calibration | None,
          comparability: Mapping[str, Any] | None, alpha: float) -> Vote:
    method, result = outcome.method, outcome.result
    if result is None:
        return Vote(method.name, False, None, None, f"not applicable: {outcome.reason}")
    if calibration is not None and not calibration.calibrated:
        return Vote(method.name, False, None, None, f"miscalibrated on the held-out baseline groups: {calibration.reason}")
    if method.exact and method.calibrated:
        checked = ("calibration checked on the comparable baseline pairs" if calibration
                   else "calibration not checked (no baseline, or no comparable baseline pairs)")
        return Vote(method.name, True, result.log10_pvalue, EXACT_SOURCE, f"exact under H0; {checked}",
                    result.null.min_log10_pvalue)
    if comparability is None:
        return Vote(method.name, False, None, None,
                    "its within-pair test is not evidence of derivation; it needs a comparable baseline population")
    if population is None or population.min_pvalue > alpha:
        have = "no comparable pairs" if population is None else (
            f"{population.n_pairs} comparable pairs, worth {population.effective_pairs:.1f} independent ones "
            f"(floor {population.min_pvalue:.3g} > alpha)")
        return Vote(method.name, False, None, None, f"{NO_COMPARABLE}: {have}; it needs {comparability['needed']}")
    return Vote(method.name, True, population.log10_pvalue, POPULATION_SOURCE,
                "empirical p against the comparable baseline pairs; calibration checked across held-out groups",
                math.log10(population.min_pvalue))


def run_audit(
    path_a: str | Path,
    path_b: str | Path,
    baseline: Population | str | Path | None = None,
    methods: Sequence[str] | None = None,
    seed: int | None = None,
    alpha: float | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    plan: Plan | None = None,
) -> Audit:
    """Compare ``path_a`` and ``path_b``; with a baseline, weigh every method against it and decide.

    With a ``plan``, the analysis is the plan's unless an argument says
    otherwise, and any difference makes it exploratory (no verdict); a plan
    for another population is refused.  Without a plan the analysis is
    exploratory.  ``params`` overrides method parameters (not with a
    baseline, whose fingerprints were made with the defaults).
    """
    base = _population(baseline)
    if plan is not None:
        digest = base.digest if base is not None else None
        if plan.population != digest:
            raise InputError(f"the analysis plan was made for population {plan.population or 'none'}, not "
                             f"{digest or 'none'}: write a plan for this population (audit plan)")
        methods = plan.methods if methods is None else methods
        alpha = plan.alpha if alpha is None else alpha
        seed = plan.seed if seed is None else seed
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    seed = _audit_seed(base, seed, params, alpha)
    comparison = compare_models(path_a, path_b, methods, seed, params)
    if plan is None:
        why = [NO_PLAN]
    else:
        why = plan.deviations(methods=method_list(methods), alpha=alpha, seed=seed,
                              population=base.digest if base is not None else None, rule=plan.rule)
        why += [f"method parameters changed ({', '.join(params)})"] if params else []
    return assess(comparison, base, alpha, rule=plan.rule if plan else None, plan=plan, exploratory_because=why)


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


def write_plan(out: str | Path, *, baseline: Population | str | Path | None = None, methods: Sequence[str] | None = None,
               alpha: float = DEFAULT_ALPHA, seed: int | None = None, rule: ComparabilityRule | None = None) -> Plan:
    """Fix the analysis before any model is read: methods, alpha, seed, population digest, comparability rule."""
    base = _population(baseline)
    names = method_list(methods)
    for name in names:
        get_method(name)  # a clear error for unknown names
    plan = make_plan(methods=names, alpha=alpha, seed=_audit_seed(base, seed, None, alpha),
                     population=base.digest if base is not None else None,
                     population_name=base.name if base is not None else None, rule=rule)
    plan.save(out)
    return plan


def _shape(model: ModelInfo) -> Shape:
    return Shape(model.family, model.depth, model.hidden, model.vocab)


def _comparable(base: Population, rule: ComparabilityRule, cases: Sequence[Shape], table: PairTable) -> tuple[PairTable, dict]:
    """The comparable part of ``table`` and what the report shows of the rule's outcome."""
    shapes = {name: Shape.of_member(base.members[name].architecture) for pair in table.pairs for name in pair}
    outcome = apply_rule(rule, cases, shapes, table.pairs)
    kept = table.subset(outcome.kept)
    return kept, {"rule": rule.describe(), "cases": [c.describe() for c in cases], "kept_count": len(outcome.kept),
                  "dropped_count": len(outcome.dropped), **outcome.to_dict(table.pairs), "needed": rule.needed(cases)}


def assess(comparison: Comparison, base: Population | None, alpha: float = DEFAULT_ALPHA, *,
           rule: ComparabilityRule | None = None, plan: Plan | None = None,
           exploratory_because: Sequence[str] = ()) -> Audit:
    """Weigh a finished comparison against the comparable part of the population (if any) and decide."""
    rule = rule or ComparabilityRule()
    excluded, groupings = set(), {}
    cases = [_shape(m) for m in comparison.models]
    if base is not None:
        excluded = {name for m in comparison.models if (name := base.member_with(m.sha256))}
        groupings = member_groups({n: m.architecture for n, m in base.members.items()},
                                  {n: m.source for n, m in base.members.items()})
    evidence = []
    for outcome in comparison.outcomes:
        population = calibration = comparability = None
        if base is not None and outcome.result is not None:
            table, comparability = _comparable(base, rule, cases, base.pair_table(outcome.method.name).without(excluded))
            if table.statistics.size:
                population = population_test(outcome.result.statistic, table.statistics, pair_models=list(table.pairs),
                                             transform=_transform(outcome.method))
                calibration = population_calibration(outcome.method, table, alpha, outcome.result.null.min_log10_pvalue,
                                                     groupings)
        evidence.append(MethodEvidence(outcome, population, calibration, comparability,
                                       _vote(outcome, population, calibration, comparability, alpha)))
    power = _power(base, alpha, comparison)
    verdict = decide([e.vote for e in evidence], alpha, power)
    body = decide([e.vote for e in evidence if not e.outcome.method.reads_embeddings], alpha, power)
    if exploratory_because:
        why = "; ".join(exploratory_because)
        verdict, body = exploratory(verdict, why), exploratory(body, why)
    return Audit(comparison, base, tuple(evidence), verdict, body, rule, plan, tuple(exploratory_because))


def _transform(method: Method) -> str:
    return "fisher-z" if method.correlation else "identity"


def _power(base: Population | None, alpha: float, comparison: Comparison) -> dict[str, dict]:
    """Held-out power of each method at ``alpha``, when the baseline ships it for the suspects' shapes."""
    if base is None or not (base.root / "power.json").is_file():
        return {}
    data = json.loads((base.root / "power.json").read_text())
    shapes = {tuple(s) for s in data.get("shapes", [])}
    if not all((m.depth, m.hidden) in shapes for m in comparison.models):
        return {}  # measured on other shapes: not quoted
    return {name: {k: rates[f"{alpha:g}"][k] for k in ("rate", "low", "high", "n")}
            for name, rates in data.get("power", {}).items() if f"{alpha:g}" in rates}


def format_audit(audit: Audit) -> str:
    """The population, calibration and verdict lines `audit compare --baseline` prints under the method table."""
    lines = [format_table(audit.comparison), ""]
    if audit.baseline is not None:
        lines.append(f"baseline: {audit.baseline.name} ({len(audit.baseline.members)} models, seed {audit.baseline.seed}); "
                     f"comparability: {audit.rule.describe()}")
        header = ("method", "population p", "model-based p", "pairs kept/dropped", "n_eff", "calibration (worst group)",
                  "counts")
        rows = []
        for e in audit.evidence:
            pop, cal, comp = e.population, e.calibration, e.comparability
            worst = cal.worst if cal else None
            rows.append((
                e.outcome.method.name,
                format_pvalue(pop.log10_pvalue) if pop else "-",
                format_pvalue(pop.tail.log10_pvalue) if pop and pop.tail else "-",
                f"{comp['kept_count']}/{comp['dropped_count']}" if comp else "-",
                f"{pop.effective_pairs:.1f}" if pop else "-",
                (("ok" if cal.calibrated else "MISCALIBRATED") + f" {cal.false_positives}/{cal.n}"
                 + (f" ({worst.false_positives}/{worst.n})" if worst else "")) if cal else "-",
                (e.vote.source or "") if e.vote.counts else f"no: {e.vote.reason}",
            ))
        lines += columns(header, rows)
        lines.append("")
    v = audit.verdict
    if audit.plan is not None:
        lines.append(f"analysis plan: sha256 {audit.plan.digest}, written {audit.plan.created}")
    decision = (f"smallest Holm-adjusted p = {format_pvalue(v.log10_pvalue)} over {len(v.deciding)} method(s)"
                if v.log10_pvalue is not None else "no counting method")
    if v.combined_log10 is not None and len(v.deciding) > 1:
        decision += f"; Cauchy combination {format_pvalue(v.combined_log10)} (shown, does not decide)"
    if v.label == EXPLORATORY:
        lines.append(f"EXPLORATORY (no verdict): {'; '.join(audit.exploratory)}; {decision}")
    else:
        lines.append(f"verdict at alpha {v.alpha:g}: {v.label.upper()} - {v.headline}; {decision}")
    lines.append(f"  {v.reason}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Evaluation:
    """A reported number (no weights at hand) against the comparable part of a population's null."""

    method: str
    test: PopulationTest
    population: str
    case_depths: tuple[int, ...]
    comparability: Mapping[str, Any]


def evaluate_statistic(method: str, statistic: float, baseline: Population | str | Path, depths: Sequence[int] = (),
                       *, widths: Sequence[int] = (), alpha: float = DEFAULT_ALPHA,
                       rule: ComparabilityRule | None = None) -> Evaluation:
    """Where ``statistic`` falls among the comparable population pairs for ``method`` (e.g. attn-std 0.927).

    Without the case's depths comparability cannot be established; with too few
    comparable pairs to reach ``alpha`` there is no p-value:
    :class:`NoComparablePopulation` says what population would be needed.
    """
    base = _population(baseline)
    chosen = get_method(method)  # a clear error for unknown names
    if chosen.correlation and not -1.0 <= statistic <= 1.0:
        raise InputError(f"{method} is a correlation; {statistic} is outside [-1, 1]")
    if not depths:
        raise InputError("give the depths of the case's models (--depth A B): a population counts only for "
                         "comparable models")
    rule = rule or ComparabilityRule()
    widths = list(widths) or [None] * len(depths)
    if len(widths) != len(depths):
        raise InputError("give as many widths as depths")
    cases = [Shape(None, int(d), w, None) for d, w in zip(depths, widths)]
    table, comparability = _comparable(base, rule, cases, base.pair_table(method))
    if not table.statistics.size:
        raise NoComparablePopulation(f"population '{base.name}' has no {method} pairs comparable to "
                                     f"{', '.join(c.describe() for c in cases)} ({rule.describe()}); no p-value. "
                                     f"It would need {comparability['needed']}")
    test = population_test(statistic, table.statistics, pair_models=list(table.pairs), transform=_transform(chosen))
    if test.min_pvalue > alpha:
        raise NoComparablePopulation(f"population '{base.name}' has {test.n_pairs} {method} pairs comparable to the case, "
                                     f"worth {test.effective_pairs:.1f} independent ones: its smallest p "
                                     f"({test.min_pvalue:.3g}) cannot reach alpha {alpha:g}; no p-value. It would need "
                                     f"more {comparability['needed']}")
    return Evaluation(method, test, base.name, tuple(depths), comparability)


@dataclass(frozen=True)
class ScanRow:
    candidate: str
    audit: Audit
    bh_log10_pvalue: float | None


def scan(suspect: str | Path, candidates: Sequence[str | Path], baseline: Population | str | Path | None = None,
         methods: Sequence[str] | None = None, seed: int | None = None, alpha: float = DEFAULT_ALPHA) -> list[ScanRow]:
    """Audit ``suspect`` against each candidate; rank by the Holm-adjusted p, Benjamini-Hochberg across candidates.

    The suspect is opened and fingerprinted once for all candidates.
    """
    base = _population(baseline)
    comparisons = compare_against(suspect, candidates, methods, _audit_seed(base, seed, None, alpha))
    audits = [assess(comparison, base, alpha, exploratory_because=(NO_PLAN,)) for comparison in comparisons]
    log10 = [a.verdict.log10_pvalue for a in audits]
    known = [i for i, p in enumerate(log10) if p is not None]
    adjusted: dict[int, float] = {}
    if known:
        adjusted = dict(zip(known, bh_log10(np.array([log10[i] for i in known]))))
    rows = [ScanRow(str(c), a, adjusted.get(i)) for i, (c, a) in enumerate(zip(candidates, audits))]
    return sorted(rows, key=lambda r: (r.bh_log10_pvalue is None, r.bh_log10_pvalue if r.bh_log10_pvalue is not None else 0.0))


def format_evaluation(result: Evaluation) -> str:
    test, comp = result.test, result.comparability
    lines = [
        f"{result.method} = {test.statistic:g} against population '{result.population}' "
        f"({test.n_pairs} comparable independent pairs of {test.n_models} models, worth {test.effective_pairs:.1f} "
        "independent pairs)",
        f"empirical p = {test.pvalue:.4g} ({test.exceedances} pair(s) at least as similar; smallest attainable "
        f"{test.min_pvalue:.4g})",
    ]
    if test.tail is not None:
        lines.append(f"model-based p = {format_pvalue(test.tail.log10_pvalue)} (normal fitted to the {test.tail.transform} "
                     f"null; {test.tail.gof_test} p = {test.tail.gof_pvalue:.3g}; shown beside, never decisive)")
    elif test.tail_note:
        lines.append(test.tail_note)
    quantiles = np.quantile(test.null_distribution, [0.5, 0.95, 0.99])
    lines.append(f"null: median {quantiles[0]:.4f}, 95% {quantiles[1]:.4f}, 99% {quantiles[2]:.4f}, max {test.null_distribution.max():.4f}")
    lines.append(f"comparability: {comp['rule']}; kept {comp['kept_count']} pair(s), dropped {comp['dropped_count']}")
    lines.append("exploratory: a single reported number, outside any analysis plan")
    return "\n".join(lines)


def format_scan(rows: list[ScanRow], alpha: float) -> str:
    header = ("rank", "candidate", "Holm p (pair)", "BH-adjusted p", "flagged")
    table = [(str(i + 1), r.candidate, format_pvalue(r.audit.verdict.log10_pvalue) if r.audit.verdict.log10_pvalue is not None else "-",
              format_pvalue(r.bh_log10_pvalue) if r.bh_log10_pvalue is not None else "-",
              "yes (BH <= alpha)" if r.bh_log10_pvalue is not None and r.bh_log10_pvalue <= math.log10(alpha) else "no")
             for i, r in enumerate(rows)]
    lines = columns(header, table)
    lines.append(f"Benjamini-Hochberg controls the false discovery rate across the {len(rows)} candidates at alpha {alpha:g}. "
                 "Exploratory: a scan follows no analysis plan; audit a flagged pair by a plan for a verdict.")
    return "\n".join(lines)
