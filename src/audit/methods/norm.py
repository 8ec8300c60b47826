"""norm: mean-centred correlation of the RMSNorm/LayerNorm gain vectors.

Gains sit near one, so the raw cosine of any two models' gains is ~0.99;
centring each vector first leaves the coordinate-specific pattern.  The
statistic is the mean, over the norms both models have (pre-attention,
pre-MLP per layer, final, embedding norm), of the Pearson r of the gains.

Test: permute B's hidden (residual) coordinates, one permutation for every
norm at once.  For independently trained models whose initialisation and
training are symmetric under permutations of the residual basis (i.i.d.
init, elementwise norms, Adam), B's distribution is invariant under that
permutation, so the null is exact.  The fingerprint keeps at most
``coordinates`` residual coordinates (a seeded subset) of every gain vector,
as float32 (exact for 16- and 32-bit checkpoints):
the test stays exact on the subset and the null's spread grows as
1/sqrt(coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.checkpoint.tensor import require_finite
from audit.methods.base import Fingerprint, Inapplicable, Model
from audit.methods.common import DEFAULT_RESAMPLES, Pairing, PermutationMethod, residual_width, shape_mismatch, unit_vectors
from audit.stats import seeded_subset

LAYER_NORMS = ("norm.attn", "norm.mlp")
GLOBAL_NORMS = ("norm.embed", "norm.final")


@dataclass(frozen=True)
class Norm(PermutationMethod):
    coordinates: int = 2048
    n_resamples: int = DEFAULT_RESAMPLES

    name = "norm"
    explanation = (
        'Normalisation layers carry one scaling factor per internal coordinate. Training leaves a '
        'characteristic pattern in these factors; a derived model inherits it. The test shuffles the '
        'coordinates of one model many times to see how often chance alone produces as much agreement, which '
        'gives an exact p-value when the models were initialised independently.'
    )
    reference = 'this project (DESIGN.md, method 3): mean-centred norm gains with an exact coordinate-permutation test'
    measures = "Pearson r of mean-centred norm gain vectors, averaged over the norms both models have"
    survives = ("fine-tuning, any rescaling of the attention/MLP weights; defeated by a permutation of the "
                "residual basis")
    exact = True

    def fingerprint_params(self) -> dict:
        return {"coordinates": self.coordinates}

    def _gains(self, model: Model) -> dict[str, object]:
        roles, width = model.roles, residual_width(model.roles)
        found = {f"layers.{layer.index}.{r}": layer.roles[r] for layer in roles.layers for r in LAYER_NORMS
                 if r in layer.roles}
        found |= {r: roles.globals[r] for r in GLOBAL_NORMS if r in roles.globals}
        return {label: view for label, view in found.items() if view.shape == (width,)}

    def requirement(self, model: Model) -> str | None:
        return None if self._gains(model) else "no norm gain vectors of the residual width"

    def extract(self, model: Model, seed: int) -> Fingerprint:
        width = residual_width(model.roles)
        coords = seeded_subset(width, self.coordinates, seed, "norm", width)
        gains = self._gains(model)
        rows = []
        for view in gains.values():
            values = view.sample(coords)
            require_finite(values, view.name)
            rows.append(values)
        return self.make(seed, {"labels": list(gains), "width": width, "depth": model.roles.depth},
                         {"coords": coords, "gains": np.array(rows, dtype=np.float32)})

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if reason := super().mismatch(a, b) or shape_mismatch(a, b, "norms are compared layer by layer"):
            return reason
        if not set(a.meta["labels"]) & set(b.meta["labels"]):
            return "the models share no norm role"
        return None

    def pairing(self, a: Fingerprint, b: Fingerprint) -> Pairing:
        shared = [label for label in a.meta["labels"] if label in b.meta["labels"]]
        ga = a.arrays["gains"][[a.meta["labels"].index(s) for s in shared]].astype(np.float64)
        gb = b.arrays["gains"][[b.meta["labels"].index(s) for s in shared]].astype(np.float64)
        keep = (np.ptp(ga, axis=1) > 0) & (np.ptp(gb, axis=1) > 0)
        if not keep.any():
            raise Inapplicable("every norm gain vector is constant in one model (untrained, or folded into weights)")
        ua = unit_vectors(ga[keep] - ga[keep].mean(axis=1, keepdims=True), "a norm gain vector")
        ub = unit_vectors(gb[keep] - gb[keep].mean(axis=1, keepdims=True), "a norm gain vector")
        per_norm = {label: float(r) for label, r in zip(np.array(shared)[keep], np.einsum("ij,ij->i", ua, ub))}
        details = {"per_norm": per_norm, "coordinates": int(ga.shape[1]),
                   "skipped_constant": [s for s, k in zip(shared, keep) if not k]}
        return Pairing(ua.T @ ub / keep.sum(), "residual coordinates of B (one permutation for every norm)", details)
