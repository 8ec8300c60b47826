"""neuron-match: the constrained test of Zhu, Ahmed, Kuditipudi & Liang (ICML 2025).

Per layer, the hidden units of A and B are matched by their MLP up-projection
rows (cosine similarity, optimal assignment), and the Spearman correlation
between the matching and the identity is tested.  If B was trained
independently from an initialisation that is symmetric under permutations of
the hidden units (i.i.d. init) with a permutation-equivariant optimiser, its
units are exchangeable, the matching is a uniformly random permutation, and
the p-value is exact (up to the t approximation of Spearman's null, floored
at the exact 1/n! of the best possible matching).  Layers combine by Fisher.
Permuting B's hidden units (a function-preserving change) defeats it.

Fingerprint: the up-projection restricted to a seeded subset of ``rows``
hidden units and ``coordinates`` residual coordinates per MLP block (same
rows for every block of the same shape, so a dense MLP compares with each
expert), for as many evenly spread layers as ``budget`` bytes allow.  Cost in
power: cosines over k coordinates have null spread 1/sqrt(k), so a derived
unit is recognised while its cosine with its ancestor stays above roughly
sqrt(2 ln rows / k) (0.2 with the defaults); fewer rows lower the per-layer
floor 1/rows!.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.checkpoint.tensor import require_finite
from audit.methods.base import Fingerprint, Model
from audit.methods.common import F32_BYTES, layer_budget, mlp_blocks, residual_width, sample_block, shape_mismatch
from audit.methods.matching import BlockEvidence, LayerMatchingMethod, match_rows
from audit.stats import seeded_subset, spearman_log10


@dataclass(frozen=True)
class NeuronMatch(LayerMatchingMethod):
    rows: int = 128
    coordinates: int = 256
    budget: int = 4 << 20

    name = "neuron-match"
    tunable = ("budget",)
    explanation = (
        'Each layer of the feed-forward network has thousands of hidden units. This method pairs every unit '
        'of one model with its most similar unit of the other and asks whether the pairing is the identity '
        '(unit 1 with unit 1, and so on), as it is when one model was trained from the other. For '
        'independently trained models any pairing is equally likely, which gives an exact p-value. '
        'Relabelling the units defeats it; robust-match does not have this weakness.'
    )
    reference = 'Zhu, Ahmed, Kuditipudi, Liang, "Independence Tests for Language Models", ICML 2025 (the constrained test on MLP up-projection rows)'
    measures = ("per layer, Spearman rho between the optimal matching of MLP hidden units (cosine of up-projection "
                "rows) and the identity; Fisher over layers")
    survives = "fine-tuning, rescaling; defeated by permuting hidden units or the residual basis"
    exact = True

    def fingerprint_params(self) -> dict:
        return {"rows": self.rows, "coordinates": self.coordinates, "budget": self.budget}

    def requirement(self, model: Model) -> str | None:
        if not any("up" in b for layer in model.roles.layers for b in mlp_blocks(layer).values()):
            return "no MLP up-projection"
        return None

    def extract(self, model: Model, seed: int) -> Fingerprint:
        width = residual_width(model.roles)
        coords = seeded_subset(width, self.coordinates, seed, "residual", width)
        ups = [{name: block["up"] for name, block in mlp_blocks(layer).items()
                if "up" in block and block["up"].shape[1] == width} for layer in model.roles.layers]
        per_layer = max(sum(min(v.shape[0], self.rows) for v in blocks.values()) for blocks in ups)
        layers = layer_budget(self.budget, per_layer * coords.size * F32_BYTES, model.roles.depth)
        arrays, blocks_meta = {"coords": coords}, {}
        for index in layers:
            blocks_meta[str(index)] = {}
            for name, view in ups[index].items():
                units = seeded_subset(view.shape[0], self.rows, seed, "neuron-match", index, list(view.shape))
                values = sample_block(view, units, coords)
                require_finite(values, view.name)
                arrays[f"up.{index}.{name}"] = values.astype(np.float32)
                blocks_meta[str(index)][name] = view.shape[0]
        return self.make(seed, {"width": width, "depth": model.roles.depth, "blocks": blocks_meta}, arrays)

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if reason := super().mismatch(a, b) or shape_mismatch(a, b, "layers are matched by index"):
            return reason
        return None if self._pairs(a, b) else "no layer has MLP blocks of equal width in both models"

    @staticmethod
    def _pairs(a: Fingerprint, b: Fingerprint) -> list[tuple[str, str, str]]:
        pairs = []
        for layer, blocks_a in a.meta["blocks"].items():
            blocks_b = b.meta["blocks"].get(layer, {})
            pairs += [(layer, x, y) for x, wa in blocks_a.items() for y, wb in blocks_b.items() if wa == wb]
        return pairs

    def pvalue_model(self) -> str:
        return "per pair: Spearman rho of the matching against the identity, one-sided t approximation floored at 1/n!"

    def evidence(self, a: Fingerprint, b: Fingerprint) -> tuple[list[BlockEvidence], dict]:
        found = []
        for layer, x, y in self._pairs(a, b):
            ua = a.arrays[f"up.{layer}.{x}"].astype(np.float64)
            ub = b.arrays[f"up.{layer}.{y}"].astype(np.float64)
            matching = match_rows(ua, ub)
            rho, log10_p = spearman_log10(np.arange(len(matching)), matching)
            found.append(BlockEvidence(int(layer), x, y, rho, log10_p, len(matching)))
        return found, {"coordinates": int(a.arrays["coords"].size)}
