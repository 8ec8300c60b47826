#!/usr/bin/env python
"""aligned-match, layer-map and head-match on every pair of a zoo, by disguise set (issue 12).

    .venv/bin/python benchmarks/alignment_on_zoo.py zoo [--seed 0] [--methods aligned-match layer-map head-match]

Prints, per disguise set of ``pairs.json`` and per chosen method: the
weakest derived pair's exact p (over the derived pairs it applies to), the
independent pairs it applies to and how many of them reach p <= 0.01 and
p <= 0.05; with layer-map, whether the map names the zoo's dropped and
duplicated layers (parent-child pairs); with aligned-match or layer-map, the
residual alignment chosen.  Then, per method, the independent pairs' false
positives with and without a disguised member, and the mean agreement per
count (a uniform permutation's fixed points average 1) and a KS test of the
randomised p-values (P(K > k) + U P(K = k), uniform when the null is exact)
for the counting methods.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from audit import assign_roles, open_checkpoint
from audit.methods import Model, get_method
from audit.stats import format_pvalue
from audit.stats.fixed_points import convolve_log_pmf, fixed_point_log_pmf, log10_tail

METHODS = ("aligned-match", "layer-map", "head-match")


def _row() -> dict:
    return {"derived": collections.defaultdict(list), "maps": [], "n": collections.Counter(), "kinds": collections.Counter(),
            "at_01": collections.Counter(), "at_05": collections.Counter()}


def randomised_pvalue(blocks: list[dict], rng: np.random.Generator) -> float | None:
    """P(K > k) + U P(K = k) under the convolved fixed-point null (None when counts compete, as MoE block pairs do)."""
    if len({(b["layer_a"], b["block_a"]) for b in blocks}) != len(blocks):
        return None
    log_pmf = np.zeros(1)
    for b in blocks:
        log_pmf = convolve_log_pmf(log_pmf, fixed_point_log_pmf(b["units"], b["candidates"]))
    k = sum(b["agreements"] for b in blocks)
    return 10 ** log10_tail(log_pmf, k + 1) + rng.uniform() * float(np.exp(log_pmf[k]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    methods = [get_method(name) for name in args.methods]
    pairs = json.loads((args.zoo / "pairs.json").read_text())
    prints, metas = collections.defaultdict(dict), {}
    for name in sorted({p[k] for p in pairs for k in ("a", "b")}):
        with open_checkpoint(args.zoo / "models" / name) as checkpoint:
            model = Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary)
            kinds = {}
            for method in methods:  # layer-map shares aligned-match's fingerprint
                kinds.setdefault(method.fingerprint_kind, method.extract(model, args.seed))
                prints[method.name][name] = kinds[method.fingerprint_kind]
        metas[name] = json.loads((args.zoo / "models" / name / "meta.json").read_text())
    rows = collections.defaultdict(_row)
    controls = {m.name: {"plain": [], "disguised": []} for m in methods}
    counts = collections.defaultdict(list)
    randomised = collections.defaultdict(list)
    rng = np.random.default_rng(args.seed)
    for pair in pairs:
        row = rows[" + ".join(sorted(pair.get("disguises") or [])) or "none"]
        results = {}
        for m in methods:
            a, b = prints[m.name][pair["a"]], prints[m.name][pair["b"]]
            if m.mismatch(a, b) is None:
                results[m.name] = m.test(a, b, args.seed)
        aligned = results.get("aligned-match") or results.get("layer-map")
        if aligned is not None:
            row["kinds"][aligned.details["alignment"]["kind"]] += 1
        if pair["label"] == "derived":
            for name, result in results.items():
                row["derived"][name].append(result.log10_pvalue)
            drawn = metas[pair["b"]].get("derivation_params") or {}
            if metas[pair["b"]].get("parent") == pair["a"] and "layer-map" in results:
                found = results["layer-map"].details["layer_map"]
                row["maps"].append(found["dropped_a"] == drawn.get("drop", []) and found["duplicated_a"] == drawn.get("duplicate", []))
            continue
        for name, result in results.items():
            row["n"][name] += 1
            row["at_01"][name] += result.log10_pvalue <= -2
            row["at_05"][name] += result.pvalue <= 0.05
            controls[name]["disguised" if pair.get("disguises") else "plain"].append(result.pvalue)
            if name != "layer-map":
                if (value := randomised_pvalue(result.details["blocks"], rng)) is not None:
                    randomised[(name, "disguised" if pair.get("disguises") else "plain")].append(value)
                for block in result.details["blocks"]:
                    counts[(name, block["block_a"] if name == "head-match" else "units")].append(block["agreements"])
    header = ["disguises"]
    for name in args.methods:
        header += [f"{name}: derived pairs", f"{name}: weakest exact p", f"{name}: independent pairs",
                   f"{name}: p <= 0.01", f"{name}: p <= 0.05"]
    if "layer-map" in args.methods:
        header.append("layer map right (parent-child)")
    if {"aligned-match", "layer-map"} & set(args.methods):
        header.append("alignment found")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key, row in sorted(rows.items()):
        cells = [key]
        for name in args.methods:
            derived = row["derived"][name]
            cells += [str(len(derived)), format_pvalue(max(derived)) if derived else "–", str(row["n"][name]),
                      str(row["at_01"][name]), str(row["at_05"][name])]
        if "layer-map" in args.methods:
            cells.append(f"{sum(row['maps'])}/{len(row['maps'])}" if row["maps"] else "–")
        if {"aligned-match", "layer-map"} & set(args.methods):
            cells.append(", ".join(f"{k} {v}" for k, v in sorted(row["kinds"].items())))
        print("| " + " | ".join(cells) + " |")
    print("\n| method | independent pairs | plain: p <= 0.01 | plain: p <= 0.05 | disguised member: p <= 0.01 | "
          "disguised member: p <= 0.05 |")
    print("|---|---|---|---|---|---|")
    for name, split in controls.items():
        cells = [name, str(len(split["plain"]) + len(split["disguised"]))]
        for part in ("plain", "disguised"):
            values = np.array(split[part])
            cells += [f"{np.sum(values <= alpha)}/{values.size}" for alpha in (0.01, 0.05)]
        print("| " + " | ".join(cells) + " |")
    for (name, kind), values in sorted(counts.items()):
        print(f"{name} ({kind}): mean agreements per count on independent pairs {np.mean(values):.3f} over {len(values)} counts")
    for (name, part), values in sorted(randomised.items()):
        print(f"{name} ({part} independent pairs): randomised p-values, KS against uniform p = "
              f"{stats.kstest(values, 'uniform').pvalue:.2g} over {len(values)} pairs")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
