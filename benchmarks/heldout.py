#!/usr/bin/env python
"""Held-out accuracy of the verdict: populations and test pairs from different parts of the zoo.

    nice .venv/bin/python benchmarks/heldout.py zoo [--out FILE.md] [--write-power baselines/zoo]

A population that is compared with its own members says nothing about a
shift.  Here every figure comes from a split: the baseline population is
built (through the library, ``Population.add``) from one part of the zoo's
independently trained models, and the pairs tested are those whose models
all come from the other part, so no tested model is a member.  Two kinds of
shift, each in both directions:

- data shard: population from the models trained on shard 0, pairs from shard 1, and back;
- recipe: population from the d4h64 recipe, pairs from every other recipe (depth 6,
  widths 96/128, grouped-query attention, a narrower MLP), and back.

Every tested pair is audited as the analysis plan would (all methods, the
declared comparability rule, Holm at alpha): the false-positive rate on
independent pairs at alpha 0.01 and 0.05 with a Clopper-Pearson 95% interval
and a one-sided binomial test against alpha, and the held-out power on
derived pairs (verdict, and each method's counting p at alpha) with 95%
intervals.  ``--write-power`` stores the power (pooled over the two shard
directions, in which every derived pair is held out exactly once) with the
shapes it was measured on in the baseline folder's ``power.json``, which
audits quote only for those shapes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from audit import assign_roles, open_checkpoint
from audit.atomic import write_atomic
from audit.auditor import assess
from audit.baselines import Population
from audit.zoo import load_zoo
from audit.compare import Comparison, ModelInfo, run_method
from audit.inspection import architecture, summarize
from audit.methods import REGISTRY, Model, get_method

ALPHAS = (0.01, 0.05)
SEED = 0


def splits(labels: dict) -> list[tuple[str, str, set[str], set[str]]]:
    """(shift, direction, population roots, held-out roots) for both shifts in both directions."""
    roots = {name for name, label in labels.items() if not label.get("parent")}
    shard0 = {n for n in roots if labels[n]["shard"] == "shard0"}
    recipe = {n for n in roots if labels[n]["recipe"] == "d4h64"}
    return [("data shard", "population shard0, pairs shard1", shard0, roots - shard0),
            ("data shard", "population shard1, pairs shard0", roots - shard0, shard0),
            ("recipe", "population d4h64, pairs other recipes", recipe, roots - recipe),
            ("recipe", "population other recipes, pairs d4h64", roots - recipe, recipe)]


def build_population(zoo, members: set[str], where: Path) -> Population:
    population = Population.open_or_create(where, name=where.name, seed=SEED, description="held-out split of the zoo")
    by_origin: dict[str, list[str]] = {}
    for name in sorted(members):
        by_origin.setdefault(f"reference zoo, {zoo.labels[name]['shard']}", []).append(name)
    for origin, names in by_origin.items():
        population.add([zoo.model_path(n) for n in names], names=names, source=origin, licence="Apache-2.0",
                       notes="independently trained (zoo/train_zoo.py)", workers=2)
    return population


def interval(k: int, n: int) -> tuple[float, float]:
    low, high = proportion_confint(k, n, alpha=0.05, method="beta") if n else (math.nan, math.nan)
    return float(low), float(high)


def rate(k: int, n: int) -> dict:
    low, high = interval(k, n)
    return {"detected": k, "n": n, "rate": k / n if n else math.nan, "low": low, "high": high}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path)
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--write-power", type=Path, metavar="BASELINE", help="write power.json into this baseline folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    zoo = load_zoo(args.zoo)
    root_of = {name: label.get("root") or name for name, label in zoo.labels.items()}
    methods = [get_method(name) for name in REGISTRY]
    plan_splits = splits(zoo.labels)
    tested = {(p.a, p.b): p for p in zoo.pairs
              if any({root_of[p.a], root_of[p.b]} <= held for _, _, _, held in plan_splits)}
    names = sorted({n for pair in tested for n in pair})
    checkpoints = {name: open_checkpoint(zoo.model_path(name)) for name in names}
    models, infos, cache, comparisons = {}, {}, {}, {}
    for name, checkpoint in checkpoints.items():
        roles = assign_roles(checkpoint)
        models[name] = Model(roles, checkpoint.vocab, checkpoint.vocabulary)
        infos[name] = {"path": str(zoo.model_path(name)), "files": checkpoint.file_hashes(), "family": roles.family,
                       "depth": roles.depth, "architecture": architecture(summarize(checkpoint, roles, hashes=False))}
    for (a, b) in tested:  # each pair's tests once: they do not depend on the population
        outcomes = tuple(run_method(m, [(a, models[a]), (b, models[b])], SEED, cache) for m in methods)
        comparisons[a, b] = Comparison((ModelInfo("A", **infos[a]), ModelInfo("B", **infos[b])), SEED, outcomes)
    for checkpoint in checkpoints.values():
        checkpoint.close()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for index, (shift, direction, members, held) in enumerate(plan_splits):
            population = build_population(zoo, members, Path(workdir) / f"split{index}")
            pairs = [p for key, p in tested.items() if {root_of[p.a], root_of[p.b]} <= held]
            audits = {alpha: [assess(comparisons[p.a, p.b], population, alpha) for p in pairs] for alpha in ALPHAS}
            results.append((shift, direction, len(members), pairs, audits))
    elapsed = time.perf_counter() - started
    lines = [f"## Held-out accuracy of the verdict (`benchmarks/heldout.py {args.zoo}`)", "",
             f"Population from one part of the zoo, pairs from the other (no tested model is a member); every pair "
             f"audited with all methods, the declared comparability rule and Holm at alpha. {len(tested)} distinct "
             f"pairs, {elapsed:.0f} s.", "",
             "| shift | direction | members | alpha | independent called derived (95% CI) | binomial p (FPR > alpha) "
             "| derived called derived (95% CI) | no comparable population (methods x pairs) |",
             "|---|---|---|---|---|---|---|---|"]
    pooled = {(s, alpha): [0, 0, 0, 0] for s in ("data shard", "recipe") for alpha in ALPHAS}
    per_method = {m.name: {alpha: [0, 0] for alpha in ALPHAS} for m in methods}
    verdict_power = {alpha: [0, 0] for alpha in ALPHAS}
    shapes = set()
    for shift, direction, size, pairs, audits in results:
        for alpha in ALPHAS:
            labels = [a.verdict.label for a in audits[alpha]]
            fp = sum(l == "derived" for l, p in zip(labels, pairs) if p.label == "independent")
            n_ind = sum(p.label == "independent" for p in pairs)
            tp = sum(l == "derived" for l, p in zip(labels, pairs) if p.label == "derived")
            n_der = sum(p.label == "derived" for p in pairs)
            silent = sum(1 for a in audits[alpha] for e in a.evidence if e.vote.reason.startswith("no comparable population"))
            binom = stats.binomtest(fp, n_ind, alpha, alternative="greater").pvalue if n_ind else math.nan
            low, high = interval(fp, n_ind)
            dlow, dhigh = interval(tp, n_der)
            lines.append(f"| {shift} | {direction} | {size} | {alpha} | {fp}/{n_ind} ({low:.3f}-{high:.3f}) | {binom:.3g} "
                         f"| {tp}/{n_der} ({dlow:.2f}-{dhigh:.2f}) | {silent} |")
            total = pooled[shift, alpha]
            total[0] += fp; total[1] += n_ind; total[2] += tp; total[3] += n_der
            if shift == "data shard":  # every derived pair is held out exactly once over the two directions
                verdict_power[alpha][0] += tp
                verdict_power[alpha][1] += n_der
                for audit, pair in zip(audits[alpha], pairs):
                    if pair.label != "derived":
                        continue
                    shapes.update((m.depth, m.hidden) for m in audit.comparison.models)
                    for e in audit.evidence:
                        per_method[e.vote.method][alpha][1] += 1
                        per_method[e.vote.method][alpha][0] += int(e.vote.counts and e.vote.log10_pvalue <= math.log10(alpha))
    lines += ["", "Pooled over both directions:", "", "| shift | alpha | independent called derived (95% CI) | "
              "binomial p (FPR > alpha) | derived called derived (95% CI) |", "|---|---|---|---|---|"]
    for (shift, alpha), (fp, n_ind, tp, n_der) in pooled.items():
        low, high = interval(fp, n_ind)
        dlow, dhigh = interval(tp, n_der)
        binom = stats.binomtest(fp, n_ind, alpha, alternative="greater").pvalue
        lines.append(f"| {shift} | {alpha} | {fp}/{n_ind} ({low:.3f}-{high:.3f}) | {binom:.3g} | {tp}/{n_der} "
                     f"({dlow:.2f}-{dhigh:.2f}) |")
    lines += ["", "Held-out power per method (data-shard splits; a method detects a derived pair when it counts and "
              "its p <= alpha):", "", "| method | alpha 0.01 (95% CI) | alpha 0.05 (95% CI) |", "|---|---|---|"]
    for name, by_alpha in per_method.items():
        cells = [f"{k}/{n} ({interval(k, n)[0]:.2f}-{interval(k, n)[1]:.2f})" for k, n in (by_alpha[a] for a in ALPHAS)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_atomic(args.out, text.encode())
    if args.write_power:
        power = {
            "source": "benchmarks/heldout.py: data-shard held-out splits of the reference zoo (population from the "
                      "models of one shard, derived pairs from the other; every derived pair held out once)",
            "command": f"benchmarks/heldout.py {args.zoo} --write-power {args.write_power}",
            "shapes": sorted([list(s) for s in shapes]),
            "power": {name: {f"{a:g}": rate(*by_alpha[a]) for a in ALPHAS} for name, by_alpha in per_method.items()},
            "verdict": {f"{a:g}": rate(*verdict_power[a]) for a in ALPHAS},
            "false_positives": {f"{shift}|{a:g}": {"called_derived": v[0], "independent_pairs": v[1]}
                                for (shift, a), v in pooled.items()},
        }
        write_atomic(args.write_power / "power.json", (json.dumps(power, indent=1, sort_keys=True) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
