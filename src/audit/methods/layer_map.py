"""layer-map: which layer of B came from which layer of A, when layers were dropped, duplicated or inserted.

Pruning (layers dropped, then healed by training), depth up-scaling and
layer duplication break every method that pairs layer i with layer i.  This
method compares every layer of A with every layer of B, with aligned-match's
test (after the residual alignment, the number of hidden units on which the
input-side and output-side matchings agree, against its exact fixed-point
null), and then:

- the method's p-value is the smallest cell p-value times the number of
  cells compared (Bonferroni over the L_A x L_B layer pairs searched: valid
  whatever the dependence between cells, so the search over maps is paid
  for);
- the map is the monotone path through the cells (A's and B's layer indices
  never decrease along it) that maximises the summed evidence of the cells it
  keeps, each cell counting -log10 of its Bonferroni-adjusted p-value beyond
  the map threshold (``map_alpha``), found by dynamic programming; cells
  weaker than ``map_share`` of the strongest cell's evidence are left out.  A layer
  of A absent from the map was dropped; a layer of B absent from it was
  inserted (or is unrecognisable); a layer of A mapped to several
  consecutive layers of B was duplicated.  Every mapped pair's exact and
  adjusted p-values are in the results.

The residual alignment of models of different depths uses the shared-token
rows and the per-coordinate statistics averaged over depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from audit.methods.aligned_match import AlignedMatch, UnitSides, agreement, describe_alignment, single_threaded_blas
from audit.methods.alignment import align
from audit.methods.base import Figure, Fingerprint, Inapplicable, Method
from audit.stats import EXACT, Null, TestResult


def monotone_map(weights: np.ndarray) -> list[tuple[int, int]]:
    """The monotone path of cells with the largest total weight (only positive cells are worth keeping).

    A path is a sequence of cells whose row and column indices never decrease
    and never both stay (a row may repeat: one layer of A standing for several
    consecutive layers of B, and vice versa).  best[i, j] is the best total
    of a path ending in (i, j); prefix maxima make the recursion O(L_A L_B).
    """
    rows, cols = weights.shape
    best = np.zeros((rows, cols))
    origin: dict[tuple[int, int], tuple[int, int] | None] = {}
    top = np.zeros((rows, cols))  # best total of a path within cells <= (i, j); 0 for the empty path
    top_end: dict[tuple[int, int], tuple[int, int] | None] = {}
    for i in range(rows):
        for j in range(cols):
            before = [(0.0, None)]
            if i > 0:
                before.append((top[i - 1, j], top_end[(i - 1, j)]))
            if j > 0:
                before.append((top[i, j - 1], top_end[(i, j - 1)]))
            value, end = max(before, key=lambda t: t[0])
            best[i, j] = weights[i, j] + value
            origin[(i, j)] = end
            top[i, j], top_end[(i, j)] = max(before + [(best[i, j], (i, j))], key=lambda t: t[0])
    path, end = [], top_end[(rows - 1, cols - 1)]
    while end is not None:
        path.append(end)
        end = origin[end]
    return path[::-1]


@dataclass(frozen=True)
class LayerMap(AlignedMatch):
    map_alpha: float = 0.01
    map_share: float = 0.1

    name = "layer-map"
    fingerprint_name = "aligned-match"
    explanation = (
        "A copy may have layers removed, repeated or added. This method compares every layer of one model with "
        "every layer of the other (with aligned-match's test), pays for having searched all those pairs, and "
        "draws the map of which layer of one model corresponds to which layer of the other, naming the layers "
        "that were dropped or duplicated."
    )
    reference = "this project (issue 12): aligned-match's exact test on every layer pair, Bonferroni over the pairs, monotone map"
    measures = ("aligned-match's unit agreement for every pair of layers of A and B; the best pair, Bonferroni over all "
                "pairs, and the monotone layer map through the significant pairs")
    survives = "everything aligned-match survives, plus dropped, duplicated and inserted layers (pruning, depth up-scaling)"
    caveat = AlignedMatch.caveat

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if reason := Method.mismatch(self, a, b):
            return reason
        if a.meta["width"] != b.meta["width"]:
            return f"residual widths differ ({a.meta['width']} vs {b.meta['width']})"
        return None

    def detail(self, details: Mapping[str, Any]) -> str | None:
        mapping = details["layer_map"]
        if not mapping["path"]:
            return f"no layer pair significant after the search over {len(mapping['layers_a'])} x {len(mapping['layers_b'])} pairs"
        parts = [describe_alignment(details["alignment"]), "layer map (A->B): " + ", ".join(f"{i}->{j}" for i, j in mapping["path"])]
        if mapping["dropped_a"]:
            parts.append(f"A's layers {mapping['dropped_a']} absent from B (dropped)")
        if mapping["duplicated_a"]:
            parts.append(f"A's layers {mapping['duplicated_a']} appear more than once in B (duplicated)")
        if mapping["inserted_b"]:
            parts.append(f"B's layers {mapping['inserted_b']} match no layer of A (inserted)")
        return "; ".join(parts)

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        mapping = details["layer_map"]
        named = []
        if mapping["dropped_a"]:
            named.append(f"layers of A absent from the map (dropped): {', '.join(map(str, mapping['dropped_a']))}")
        if mapping["duplicated_a"]:
            named.append(f"layers of A mapped more than once (duplicated): {', '.join(map(str, mapping['duplicated_a']))}")
        data = {k: mapping[k] for k in ("evidence", "layers_a", "layers_b", "path")}
        return [Figure("layer_map", data,
                       f"{self.name}: evidence (-log10 exact p) for every pair of layers, with the monotone layer map "
                       "through the pairs that stay significant after the correction for the search"
                       + (f"; {'; '.join(named)}." if named else "."), per_model=True)]

    @single_threaded_blas
    def test(self, a: Fingerprint, b: Fingerprint, seed: int) -> TestResult:
        alignment = align(a, b)
        layers_a, layers_b = sorted(a.meta["blocks"], key=int), sorted(b.meta["blocks"], key=int)
        if not layers_a or not layers_b:
            raise Inapplicable("no layer holds an MLP block in both fingerprints")
        sides_b = {(j, y): UnitSides(b, j, y, alignment, self.common_modes) for j in layers_b for y in b.meta["blocks"][j]}
        cells = np.zeros((len(layers_a), len(layers_b)))
        kept = {}
        for r, i in enumerate(layers_a):
            sides_a = {x: UnitSides(a, i, x, None, self.common_modes) for x in a.meta["blocks"][i]}
            for c, j in enumerate(layers_b):
                found = [agreement(sides_a[x], sides_b[(j, y)], int(i), int(j), x, y)
                         for x in sides_a for y in b.meta["blocks"][j]]
                best = min(found, key=lambda f: (f.log10_pvalue, -f.agreements))
                cells[r, c] = min(0.0, best.log10_pvalue + math.log10(len(found)))
                kept[(r, c)] = (best, len(found))
        search = math.log10(cells.size)
        adjusted = np.minimum(0.0, cells + search)
        # The map is descriptive (the test is the Bonferroni minimum above): it keeps cells significant after the
        # search and at least ``map_share`` of the strongest cell's evidence, so the modest agreement between
        # different layers of one model (a permuted copy's layer 0 against the original's layer 1: 7 of 176 units,
        # adjusted p 0.0013, on the zoo) does not read as a duplicated layer.
        strong = -adjusted >= self.map_share * float(-adjusted.min())
        path = monotone_map(np.where(strong, np.log10(self.map_alpha) - adjusted, -np.inf))
        pairs = []
        for r, c in path:
            best, compared = kept[(r, c)]
            pairs.append({**best.to_dict(), "block_pairs_compared": compared, "log10_pvalue_cell": float(cells[r, c]),
                          "log10_pvalue_adjusted": float(adjusted[r, c])})
        mapped_a = [int(layers_a[r]) for r, _ in path]
        mapped_b = [int(layers_b[c]) for _, c in path]
        floor = min(kept[cell][0].log10_floor + math.log10(kept[cell][1]) for cell in kept) + search
        details = {
            "alignment": alignment.summary(),
            "layer_map": {
                "layers_a": [int(i) for i in layers_a], "layers_b": [int(j) for j in layers_b],
                "evidence": [[round(-float(v), 6) for v in row] for row in cells],
                "path": [[int(layers_a[r]), int(layers_b[c])] for r, c in path],
                "pairs": pairs,
                "dropped_a": [int(i) for i in layers_a if int(i) not in mapped_a],
                "inserted_b": [int(j) for j in layers_b if int(j) not in mapped_b],
                "duplicated_a": sorted({i for i in mapped_a if mapped_a.count(i) > 1}),
                "map_alpha": self.map_alpha,
                "map_share": self.map_share,
                "depths": [a.meta["depth"], b.meta["depth"]],
            },
        }
        statistic = float(max((p["agreements"] / p["units"] for p in pairs), default=0.0))
        null = Null(EXACT, f"smallest exact cell p-value (fixed points of a uniform random permutation per layer pair), "
                           f"Bonferroni over the {cells.size} layer pairs searched; assumes the output-side matching is "
                           f"exchangeable given the input-side one", min_log10_pvalue=min(0.0, floor))
        return TestResult(statistic, float(adjusted.min()), null, details=details)
