"""The audit: compare two checkpoints, weigh each method against the comparable part
of a baseline population, and decide by the pre-registered plan.  ``audit compare
--baseline``, ``audit report`` and ``audit verify --recompute`` all run :func:`run_audit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from audit import DEFAULT_ALPHA, schema
from audit.baselines import PairTable, Population
from audit.checkpoint.hashing import HashCache
from audit.compare import Comparison, MethodOutcome, ModelInfo, compare_against, compare_models, method_list
from audit.errors import InputError, NoComparablePopulation
from audit.evidence import (
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
from audit.evidence.plan import Plan, make_plan
from audit.files import LIMITS, is_regular, read_json_file
from audit.methods import Method, get_method

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
    *,
    baseline: Population | str | Path | None = None,
    methods: Sequence[str] | None = None,
    seed: int | None = None,
    alpha: float | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    hash_cache: HashCache | None = None,
    plan: Plan | None = None,
) -> Audit:
    """Compare ``path_a`` and ``path_b``; with a baseline, weigh every method against it and decide.

    With a ``plan``, the analysis is the plan's unless an argument says
    otherwise, and any difference makes it exploratory (no verdict); a plan
    for another population is refused.  Without a plan the analysis is
    exploratory.  ``params`` overrides method parameters (not with a
    baseline, whose fingerprints were made with the defaults).  ``hash_cache``:
    see :func:`audit.compare.compare_models` (a signed report refuses cached hashes).
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
    comparison = compare_models(path_a, path_b, methods=methods, seed=seed, params=params, hash_cache=hash_cache)
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
    """Held-out power of each method at ``alpha`` (rate, 95% interval, pairs), when the baseline ships it
    for the suspects' shapes; nothing for other shapes."""
    path = None if base is None else base.root / "power.json"
    if path is None or not is_regular(path):
        return {}
    data = schema.obj(read_json_file(path, limit=LIMITS["config"], what="power table"), path, "power table")
    shapes = set()
    for i, shape in enumerate(data.get("shapes", [])):
        if not isinstance(shape, list) or len(shape) != 2:
            raise InputError(f"{path}: shapes[{i}] must be [depth, width]")
        shapes.add((schema.integer(shape[0], path, f"shapes[{i}]"), schema.integer(shape[1], path, f"shapes[{i}]")))
    if not all((m.depth, m.hidden) in shapes for m in comparison.models):
        return {}  # measured on other shapes: not quoted
    key, found = f"{alpha:g}", {}
    for name, by_alpha in schema.obj(data.get("power", {}), path, "power").items():
        by_alpha = schema.obj(by_alpha, path, f"power.{name}")
        if key in by_alpha:
            entry = schema.obj(by_alpha[key], path, f"power.{name}.{key}")
            found[name] = {k: schema.number(entry[k], path, f"power.{name}.{key}.{k}", low=0.0, high=1.0)
                           for k in ("rate", "low", "high")}
            found[name]["n"] = schema.integer(entry["n"], path, f"power.{name}.{key}.n")
    return found


@dataclass(frozen=True)
class Evaluation:
    """A reported number (no weights at hand) against the comparable part of a population's null."""

    method: str
    test: PopulationTest
    population: str
    case_depths: tuple[int, ...]
    comparability: Mapping[str, Any]


def evaluate_statistic(method: str, statistic: float, *, baseline: Population | str | Path, depths: Sequence[int] = (),
                       widths: Sequence[int] = (), alpha: float = DEFAULT_ALPHA,
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


def scan(suspect: str | Path, candidates: Sequence[str | Path], *, baseline: Population | str | Path | None = None,
         methods: Sequence[str] | None = None, seed: int | None = None, alpha: float = DEFAULT_ALPHA,
         hash_cache: HashCache | None = None) -> list[ScanRow]:
    """Audit ``suspect`` against each candidate; rank by the Holm-adjusted p, Benjamini-Hochberg across candidates.

    The suspect is opened, hashed and fingerprinted once for all candidates.
    """
    base = _population(baseline)
    comparisons = compare_against(suspect, candidates, methods=methods, seed=_audit_seed(base, seed, None, alpha),
                                  hash_cache=hash_cache)
    audits = [assess(comparison, base, alpha, exploratory_because=(NO_PLAN,)) for comparison in comparisons]
    log10 = [a.verdict.log10_pvalue for a in audits]
    known = [i for i, p in enumerate(log10) if p is not None]
    adjusted: dict[int, float] = {}
    if known:
        adjusted = dict(zip(known, bh_log10(np.array([log10[i] for i in known]))))
    rows = [ScanRow(str(c), a, adjusted.get(i)) for i, (c, a) in enumerate(zip(candidates, audits))]
    return sorted(rows, key=lambda r: (r.bh_log10_pvalue is None, r.bh_log10_pvalue if r.bh_log10_pvalue is not None else 0.0))


