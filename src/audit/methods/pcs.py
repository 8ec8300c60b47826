"""pcs: parameter cosine similarity of same-shaped weight matrices, on seeded sampled positions.

Every 2-D attention and MLP matrix of every layer (and every MoE expert) is
sampled on a grid: a seeded subset of ``coordinates`` residual-stream
coordinates, shared by all matrices, times a seeded subset of the other axis
(hidden units, head dimensions).  The positions are a pure function of the
seed, the matrix's label and shape, so a stored fingerprint holds the
samples instead of the weights and any two models of the same shapes are
sampled at the same positions.  The statistic is the mean, over the matrices
both models have with equal shapes, of the cosine between A's and B's
samples (matrices pair by label: expert E with expert E).

Test: permute B's residual coordinates, one permutation for every matrix (the
rows of o and down, the columns of q, k, v, gate, up).  This is a symmetry of
training for i.i.d. initialisation, elementwise norms and Adam, so the null
is exact for independently *trained* models too; permuting each matrix's
output rows on their own, as at initialisation, is not a symmetry once
training has coupled them.  Hidden-unit permutations of B defeat the MLP
part (attention still carries the signal); residual permutations defeat it.
Embeddings and the output head are left out on purpose: their unseen-token
rows would detect derivation on their own (see DESIGN, pitfalls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.checkpoint import TensorView
from audit.checkpoint.tensor import require_finite
from audit.methods.base import Fingerprint, Inapplicable, Model
from audit.methods.common import (
    DEFAULT_RESAMPLES,
    F32_BYTES,
    Pairing,
    PermutationMethod,
    mlp_blocks,
    residual_width,
    sample_block,
    shape_mismatch,
)
from audit.stats import seeded_subset

READS_RESIDUAL = ("attn.q", "attn.k", "attn.v", "gate", "up")  # residual stream is the input (columns)
WRITES_RESIDUAL = ("attn.o", "down")  # residual stream is the output (rows)


def matrices(model: Model, width: int) -> dict[str, tuple[TensorView, bool]]:
    """Label -> (view, residual axis is the columns) for every 2-D layer matrix touching the residual stream."""
    found: dict[str, tuple[TensorView, bool]] = {}
    for layer in model.roles.layers:
        named = {r: layer.roles[r] for r in ("attn.q", "attn.k", "attn.v", "attn.o") if r in layer.roles}
        for block, views in mlp_blocks(layer).items():
            named |= {f"{block}.{r}": v for r, v in views.items()}
        for label, view in named.items():
            role = label.rsplit(".", 1)[-1] if not label.startswith("attn.") else label
            reads = role in READS_RESIDUAL
            if role not in READS_RESIDUAL + WRITES_RESIDUAL or len(view.shape) != 2:
                continue
            if view.shape[1 if reads else 0] == width:
                found[f"layers.{layer.index}.{label}"] = (view, reads)
    return found


@dataclass(frozen=True)
class Pcs(PermutationMethod):
    coordinates: int = 128
    matrix_budget: int = 8192  # bytes of float32 samples per matrix
    n_resamples: int = DEFAULT_RESAMPLES

    name = "pcs"
    population_heatmap = True
    explanation = (
        'Compares the weight matrices of the two models directly, number by number at the same positions (a '
        'seeded sample of positions, the same for any model). Independently initialised models share no '
        "structure at fixed positions, so shuffling one model's internal coordinates shows what chance "
        'agreement looks like; a derived model agrees far more.'
    )
    reference = 'parameter cosine similarity as in Zhu, Ahmed, Kuditipudi, Liang, "Independence Tests for Language Models", ICML 2025, on seeded sampled positions'
    measures = "mean cosine similarity of same-shaped attention and MLP matrices on seeded sampled positions"
    survives = ("fine-tuning, rescaling of any matrix (cosine is scale-free); hidden-unit permutations defeat the "
                "MLP part only; a residual-basis permutation defeats it")
    exact = True

    def fingerprint_params(self) -> dict:
        return {"coordinates": self.coordinates, "matrix_budget": self.matrix_budget}

    def requirement(self, model: Model) -> str | None:
        try:
            return None if matrices(model, residual_width(model.roles)) else "no attention or MLP matrices"
        except Inapplicable as exc:
            return str(exc)

    def extract(self, model: Model, seed: int) -> Fingerprint:
        width = residual_width(model.roles)
        coords = seeded_subset(width, self.coordinates, seed, "residual", width)
        per_matrix = max(1, self.matrix_budget // (F32_BYTES * coords.size))
        labels, shapes, arrays = [], [], {"coords": coords}
        for label, (view, reads) in matrices(model, width).items():
            other = view.shape[0 if reads else 1]
            picked = seeded_subset(other, per_matrix, seed, "pcs", label, list(view.shape))
            # Stored as [other axis, residual coordinate] whichever side of the matrix the residual is on.
            values = sample_block(view, picked, coords) if reads else sample_block(view, coords, picked).T
            require_finite(values, view.name)
            labels.append(label)
            shapes.append(list(view.shape))
            arrays[f"w.{label}"] = values.astype(np.float32)
        return self.make(seed, {"labels": labels, "shapes": shapes, "width": width, "depth": model.roles.depth}, arrays)

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if reason := super().mismatch(a, b) or shape_mismatch(a, b, "matrices are paired layer by layer"):
            return reason
        if not self.shared(a, b):
            return "no attention or MLP matrix has the same label and shape in both models"
        return None

    @staticmethod
    def shared(a: Fingerprint, b: Fingerprint) -> list[str]:
        shape_b = dict(zip(b.meta["labels"], map(tuple, b.meta["shapes"])))
        return [label for label, shape in zip(a.meta["labels"], map(tuple, a.meta["shapes"]))
                if shape_b.get(label) == shape]

    def pairing(self, a: Fingerprint, b: Fingerprint) -> Pairing:
        shared = self.shared(a, b)
        size = a.arrays["coords"].size
        matrix = np.zeros((size, size))
        cosines = {}
        for label in shared:
            wa = a.arrays[f"w.{label}"].astype(np.float64)
            wb = b.arrays[f"w.{label}"].astype(np.float64)
            scale = np.linalg.norm(wa) * np.linalg.norm(wb)
            if scale == 0:
                raise Inapplicable(f"sampled values of {label} are all zero in one model")
            contribution = wa.T @ wb / scale
            matrix += contribution
            cosines[label] = float(np.trace(contribution))
        by_role: dict[str, list[float]] = {}
        for label, value in cosines.items():
            by_role.setdefault(label.split(".", 2)[2], []).append(value)
        details = {"matrices": len(shared), "coordinates": size,
                   "per_role_mean": {role: float(np.mean(v)) for role, v in sorted(by_role.items())},
                   "per_matrix": cosines}
        return Pairing(matrix / len(shared), "residual coordinates of B (one permutation for every matrix)", details)
