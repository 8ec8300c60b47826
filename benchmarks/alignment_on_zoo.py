#!/usr/bin/env python
"""aligned-match and layer-map on every pair of a zoo, by disguise set (issue 12).

    .venv/bin/python benchmarks/alignment_on_zoo.py zoo [--seed 0]

Prints, per disguise set of ``pairs.json``: the weakest derived pair's exact p
(aligned-match where depths agree, else layer-map), whether the layer map names
the zoo's dropped and duplicated layers (parent-child pairs), the independent
pairs at p <= 0.01 for each method, and the residual alignment chosen.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from audit import assign_roles, open_checkpoint
from audit.methods import Model, get_method
from audit.stats import format_pvalue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    matched, mapped = get_method("aligned-match"), get_method("layer-map")
    pairs = json.loads((args.zoo / "pairs.json").read_text())
    prints, metas = {}, {}
    for name in sorted({p[k] for p in pairs for k in ("a", "b")}):
        with open_checkpoint(args.zoo / "models" / name) as checkpoint:
            model = Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary)
            prints[name] = matched.extract(model, args.seed)
        metas[name] = json.loads((args.zoo / "models" / name / "meta.json").read_text())
    rows = collections.defaultdict(lambda: {"derived": [], "maps": [], "independent": collections.Counter(), "n": 0,
                                            "kinds": collections.Counter()})
    for pair in pairs:
        a, b = prints[pair["a"]], prints[pair["b"]]
        row = rows[" + ".join(sorted(pair.get("disguises") or [])) or "none"]
        results = {m.name: m.test(a, b, args.seed) for m in (matched, mapped) if m.mismatch(a, b) is None}
        if not results:
            continue
        row["kinds"][next(iter(results.values())).details["alignment"]["kind"]] += 1
        if pair["label"] == "derived":
            row["derived"].append(results.get("aligned-match", results.get("layer-map")).log10_pvalue)
            drawn = metas[pair["b"]].get("derivation_params") or {}
            if metas[pair["b"]].get("parent") == pair["a"] and "layer-map" in results:
                found = results["layer-map"].details["layer_map"]
                row["maps"].append(found["dropped_a"] == drawn.get("drop", []) and found["duplicated_a"] == drawn.get("duplicate", []))
        else:
            row["n"] += 1
            for name, result in results.items():
                row["independent"][name] += result.log10_pvalue <= -2
    print("| disguises | derived pairs | weakest exact p | layer map right (parent-child) | independent pairs | "
          "aligned-match p <= 0.01 | layer-map p <= 0.01 | alignment found |")
    print("|---|---|---|---|---|---|---|---|")
    for key, row in sorted(rows.items()):
        weakest = format_pvalue(max(row["derived"])) if row["derived"] else "–"
        maps = f"{sum(row['maps'])}/{len(row['maps'])}" if row["maps"] else "–"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(row["kinds"].items()))
        print(f"| {key} | {len(row['derived'])} | {weakest} | {maps} | {row['n']} | {row['independent']['aligned-match']} | "
              f"{row['independent']['layer-map']} | {kinds} |")
    total = collections.Counter()
    for row in rows.values():
        total.update(row["independent"])
    n = sum(row["n"] for row in rows.values())
    print(f"\nindependent pairs: {n}; at p <= 0.01: aligned-match {total['aligned-match']}, layer-map {total['layer-map']}; "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
