#!/usr/bin/env python
"""Accuracy of every method and of the verdict on a labelled zoo.

    .venv/bin/python benchmarks/accuracy.py zoo --baseline baselines/zoo [--out FILE.md]

For every labelled pair (pairs.json) it runs the full audit: each method's
within-pair test, its empirical p against the baseline population (the
zoo's independent models; a pair's own members are left out of its null),
the calibration screen and the verdict.  It prints, per method and per
derivation type, the AUC, the TPR at FPR <= 1% and 5%, the false-positive
rates at alpha 0.01 and 0.05 on independent pairs and a KS test of the
independent pairs' p-values, for three scores per method (within-pair p,
population p, and the p that counts in the verdict), then the same for the
verdict (Holm), the verdict without embedding-based methods (body only),
each method's calibration on the population across its recorded groups, and the
per-disguise table (pairs.json ``disguises``: derived pairs' smallest exact
within-pair p and verdict, the same disguises on independent pairs).  Without
--baseline, a population is built from the zoo's independent models.
These are in-sample figures (the population's own models are tested);
benchmarks/heldout.py gives the held-out ones that audits quote.  Works on
any folder with labels.json,
pairs.json and models/NAME.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from audit import assign_roles, open_checkpoint
from audit.testing.accuracy import accuracy_rows, markdown_table, pivot_table
from audit.zoo import load_zoo
from audit.atomic import write_atomic
from audit.auditor import EXACT_SOURCE, assess, population_calibration
from audit.evidence.calibration import member_groups
from audit.baselines import Population
from audit.compare import Comparison, ModelInfo, run_method
from audit.inspection import architecture, summarize
from audit.methods import REGISTRY, Model, get_method
from audit.testing.disguise_table import PairOutcome, disguise_markdown, disguise_rows


def _population(zoo, baseline: Path | None, workdir: Path) -> Population:
    if baseline is not None:
        return Population.open(baseline)
    roots = sorted(name for name, label in zoo.labels.items() if not label.get("parent"))
    population = Population.open_or_create(workdir / "population", name=f"{zoo.root.name}-independent")
    population.add([zoo.model_path(n) for n in roots], names=roots)
    return population


def _exact_log10_p(audit) -> float | None:
    """Smallest p among the methods that count through their within-pair exact test."""
    exact = [e.vote.log10_pvalue for e in audit.evidence if e.vote.counts and e.vote.source == EXACT_SOURCE]
    return min(exact) if exact else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    zoo = load_zoo(args.zoo)
    with tempfile.TemporaryDirectory() as workdir:
        population = _population(zoo, args.baseline, Path(workdir))
        seed = population.seed
        names = sorted({n for p in zoo.pairs for n in (p.a, p.b)})
        checkpoints = {n: open_checkpoint(zoo.model_path(n)) for n in names}
        models, infos = {}, {}
        for name, checkpoint in checkpoints.items():
            roles = assign_roles(checkpoint)
            models[name] = Model(roles, checkpoint.vocab, checkpoint.vocabulary)
            infos[name] = {"path": str(zoo.model_path(name)), "files": checkpoint.file_hashes(), "family": roles.family,
                           "depth": roles.depth, "architecture": architecture(summarize(checkpoint, roles, hashes=False))}
        methods = [get_method(name) for name in REGISTRY]
        cache: dict = {}
        scores: dict[str, list[float | None]] = {}
        verdicts = {0.01: [], 0.05: []}
        for pair in zoo.pairs:
            outcomes = tuple(run_method(m, [(pair.a, models[pair.a]), (pair.b, models[pair.b])], seed, cache) for m in methods)
            comparison = Comparison((ModelInfo("A", **infos[pair.a]), ModelInfo("B", **infos[pair.b])), seed, outcomes)
            for alpha in verdicts:
                audit = assess(comparison, population, alpha)
                verdicts[alpha].append(audit)
            audit = verdicts[0.01][-1]
            for evidence in audit.evidence:
                name = evidence.outcome.method.name
                result = evidence.outcome.result
                scores.setdefault(name, []).append(result.log10_pvalue if result else None)
                scores.setdefault(f"{name} [population]", []).append(evidence.population.log10_pvalue if evidence.population else None)
                scores.setdefault(f"{name} [counted]", []).append(evidence.vote.log10_pvalue)
            scores.setdefault("verdict: Holm", []).append(audit.verdict.log10_pvalue)
            scores.setdefault("verdict: body only", []).append(audit.body_verdict.log10_pvalue)
        for checkpoint in checkpoints.values():
            checkpoint.close()
        labels = [pair.label for pair in zoo.pairs]
        lines = [f"## Accuracy on `{args.zoo}`", "",
                 f"{len(zoo.pairs)} pairs ({labels.count('derived')} derived, {labels.count('independent')} independent); "
                 f"baseline `{population.name}` ({len(population.members)} models, seed {seed}); "
                 f"{time.perf_counter() - started:.0f} s.", "",
                 "Scores are -log10 p. `[population]`: empirical p against the baseline (a pair's own members left "
                 "out); `[counted]`: the p-value the verdict uses (none when the method does not count for the pair).",
                 ""]
        rows = accuracy_rows(scores, zoo.pairs)
        counted = [f"{m} [counted]" for m in REGISTRY] + ["verdict: Holm", "verdict: body only"]
        lines += ["### All derived pairs against all independent pairs", "",
                  markdown_table([r for r in rows if r.group == "all"]), "",
                  "### AUC by derivation (the p-value that counts)", "", pivot_table(rows, "auc", counted), "",
                  "### TPR at alpha = 0.01 by derivation (the p-value that counts)", "",
                  pivot_table(rows, "tpr_at_alpha_01", counted), "",
                  "<details><summary>Every score by derivation</summary>", "", markdown_table(rows), "", "</details>", ""]
        outcomes = [PairOutcome(pair.label, pair.disguises, _exact_log10_p(audit), audit.verdict.label)
                    for pair, audit in zip(zoo.pairs, verdicts[0.01])]
        lines += ["### Per disguise (alpha 0.01)", "",
                  "Rows: the disguises separating a pair (`pairs.json` `disguises`). Exact p: the smallest p among the "
                  "methods that count with a within-pair exact test (weakest derived pair of the row, best in brackets); "
                  "independent pairs of a row are unrelated models carrying the same disguises.", "",
                  disguise_markdown(disguise_rows(outcomes, 0.01), 0.01), ""]
        lines += ["### Verdict labels", "",
                 "| alpha | independent pairs called derived | derived pairs called derived | inconclusive (indep. / derived) |",
                 "|---|---|---|---|"]
        for alpha, audits in verdicts.items():
            label = [a.verdict.label for a in audits]
            indep = [l for l, p in zip(label, zoo.pairs) if p.label == "independent"]
            derived = [l for l, p in zip(label, zoo.pairs) if p.label == "derived"]
            lines.append(f"| {alpha} | {indep.count('derived')}/{len(indep)} | {derived.count('derived')}/{len(derived)} | "
                         f"{indep.count('inconclusive')} / {derived.count('inconclusive')} |")
        lines += ["", "### Per derived pair (verdict at alpha 0.01)", "", "| pair | derivation | verdict | Holm p | counting methods |", "|---|---|---|---|---|"]
        for pair, audit in zip(zoo.pairs, verdicts[0.01]):
            if pair.label == "derived":
                v = audit.verdict
                lines.append(f"| {pair.a} ~ {pair.b} | {(pair.derivation or '').replace('|', '/')} | {v.label} | "
                             f"{'-' if v.log10_pvalue is None else f'10^{v.log10_pvalue:.1f}'} | {', '.join(v.deciding)} |")
        for alpha, audits in verdicts.items():
            wrong = [(pair, audit.verdict) for pair, audit in zip(zoo.pairs, audits)
                     if pair.label == "independent" and audit.verdict.label == "derived"]
            lines += ["", f"### Independent pairs called derived at alpha {alpha}", ""]
            lines += ["| pair | disguises | Holm p | smallest counting p-values |", "|---|---|---|---|"] if wrong else ["none"]
            for pair, v in wrong:
                votes = sorted((e.vote.log10_pvalue, e.outcome.method.name) for e in audits[zoo.pairs.index(pair)].evidence
                               if e.vote.counts)
                lines.append(f"| {pair.a} ~ {pair.b} | {' + '.join(pair.disguises) or '-'} | 10^{v.log10_pvalue:.2f} | "
                             + ", ".join(f"{m} 10^{p:.2f}" for p, m in votes[:3]) + " |")
        lines += ["", "### Calibration on the baseline across its recorded groups (alpha 0.01)", "",
                  "| method | pairs | scheme | false positives | KS p (two-sided) | KS p (p too small) | calibrated |", "|---|---|---|---|---|---|---|"]
        groups = member_groups({n: m.architecture for n, m in population.members.items()},
                               {n: m.source for n, m in population.members.items()})
        for method in methods:
            table = population.pair_table(method.name)
            if not table.statistics.size:
                continue
            calibration = population_calibration(method, table, 0.01, None, groups)
            lines.append(f"| {method.name} | {calibration.n} | {calibration.scheme.split(':')[0]} | "
                         f"{calibration.false_positives} | {calibration.ks_pvalue:.3g} | {calibration.ks_smaller_pvalue:.3g} | "
                         f"{'yes' if calibration.calibrated else 'NO: ' + calibration.reason} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_atomic(args.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
