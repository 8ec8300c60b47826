#!/usr/bin/env python
"""Each method's within-pair test on the labelled reference zoo: AUC, TPR and FPR at alpha.

    .venv/bin/python benchmarks/methods_on_zoo.py zoo [--seed 0] [--out FILE.md]

Every model is fingerprinted once per method; every pair in pairs.json is
tested; the table comes from :mod:`audit.testing.accuracy` (AUC of -log10 p between
derived and independent pairs, per derivation type).  A method that does not
apply to a pair (e.g. different depths) counts as not applicable, never as a
p-value.  This measures the within-pair tests only; the population null and
the verdict are evaluated elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from audit import assign_roles, open_checkpoint
from audit.testing.accuracy import accuracy_rows, markdown_table
from audit.zoo import load_zoo
from audit.atomic import write_atomic
from audit.compare import run_method
from audit.methods import REGISTRY, Model, get_method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the markdown tables here as well")
    args = parser.parse_args(argv)

    zoo = load_zoo(args.zoo)
    names = sorted({n for p in zoo.pairs for n in (p.a, p.b)})
    checkpoints = {n: open_checkpoint(zoo.model_path(n)) for n in names}
    models = {n: Model(assign_roles(c), c.vocab, c.vocabulary) for n, c in checkpoints.items()}
    scores: dict[str, list[float | None]] = {}
    per_pair = ["| pair | label | derivation | " + " | ".join(REGISTRY) + " |", "|---|---|---|" + "---|" * len(REGISTRY)]
    cache: dict = {}
    for name in REGISTRY:
        method, column = get_method(name), []
        for pair in zoo.pairs:
            outcome = run_method(method, [(pair.a, models[pair.a]), (pair.b, models[pair.b])], args.seed, cache)
            column.append(outcome.result.log10_pvalue if outcome.result else None)
        scores[name] = column
    calibration = [
        "| method | root pairs | FPR@a=.01 | FPR@a=.05 | KS p | KS p (p too small) |", "|---|---|---|---|---|---|"]
    roots = [i for i, p in enumerate(zoo.pairs)
             if p.label == "independent" and not zoo.labels[p.a].get("parent") and not zoo.labels[p.b].get("parent")]
    for name in REGISTRY:
        p = 10 ** np.array([scores[name][i] for i in roots if scores[name][i] is not None])
        if p.size:
            calibration.append(
                f"| {name} | {p.size} | {np.mean(p <= 0.01):.3f} | {np.mean(p <= 0.05):.3f} | "
                f"{stats.kstest(p, 'uniform').pvalue:.2g} | {stats.kstest(p, 'uniform', alternative='greater').pvalue:.2g} |")
    for i, pair in enumerate(zoo.pairs):
        cells = ["n/a" if scores[m][i] is None else f"{scores[m][i]:.1f}" for m in REGISTRY]
        per_pair.append(f"| {pair.a} ~ {pair.b} | {pair.label} | {pair.derivation or ''} | " + " | ".join(cells) + " |")
    text = "\n".join([
        "## Within-pair tests on the reference zoo", "",
        f"seed {args.seed}; {len(zoo.pairs)} pairs; scores are log10 p of each method's within-pair test.", "",
        markdown_table(accuracy_rows(scores, zoo.pairs)), "",
        "### Calibration on pairs of independently trained roots", "",
        "Independent pairs that involve derived models are clustered (a model and its derivatives err together),",
        "which makes a KS test over all independent pairs anti-conservative; pairs of two roots are cleaner",
        "(they still share models, so these KS p-values are approximate).", "",
        *calibration, "",
        "### log10 p per pair", "", *per_pair, ""])
    print(text)
    if args.out:
        write_atomic(args.out, text.encode())
    for checkpoint in checkpoints.values():
        checkpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
