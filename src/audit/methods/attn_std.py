"""attn-std: the disputed "intrinsic fingerprint", reproduced exactly, and its detrended variant.

For each layer and each of q, k, v, o: the standard deviation of all elements
of the weight matrix (streamed in float64; ddof=1 as ``torch.std``, which
does not change any correlation).  Per model and projection the sequence is
z-scored across layers; two models are compared by the Pearson r of each
projection's profile, and the headline is the mean of the four r.  When the
depths differ, the shorter profile is resampled linearly onto the longer one
over normalised depth [0, 1].

The within-pair test permutes B's layers.  It asks whether the two profiles
line up better than chance, which is not the question of derivation against
independence: all transformers of a recipe share a depth trend, so unrelated
models "line up" too.  ``attn-std-detrended`` removes a low-order polynomial
trend in normalised depth from each z-scored profile before correlating, so
its layer-permutation test asks about layer-specific deviations only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from audit.checkpoint import moments_of
from audit.methods.base import Figure, Fingerprint, Inapplicable, Model
from audit.methods.common import DEFAULT_RESAMPLES, Pairing, PermutationMethod, unit_vectors
from audit.roles import ATTENTION
from audit.stats.permutation import preload

MIN_LAYERS = 3  # a z-score and a correlation need at least three points
MAX_TREND_DEGREE = 2
MIN_RESIDUAL_DOF = 2  # degrees of freedom left after removing the trend


def resample(profile: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of each row onto ``length`` points of normalised depth [0, 1]."""
    if profile.shape[-1] == length:
        return profile
    source = np.linspace(0.0, 1.0, profile.shape[-1])
    target = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(target, source, row) for row in profile])


def zscore(profile: np.ndarray, what: str) -> np.ndarray:
    """Each row centred and divided by its (ddof=0) standard deviation."""
    centred = profile - profile.mean(axis=-1, keepdims=True)
    sd = centred.std(axis=-1, keepdims=True)
    if np.any(sd == 0):
        raise Inapplicable(f"{what}: a projection's std is the same in every layer, so its z-score is undefined")
    return centred / sd


@dataclass(frozen=True)
class AttnStd(PermutationMethod):
    n_resamples: int = DEFAULT_RESAMPLES

    name = "attn-std"
    population_heatmap = True
    explanation = (
        'This is the statistic from the public dispute. For every layer it measures how spread out the '
        "numbers in the four attention weight matrices are, and asks whether the two models' layer-by-layer "
        'patterns rise and fall together. Because almost every model of a given design has a similar pattern,'
        ' a high value is common even between unrelated models; it only means something when compared with '
        'many independently trained pairs.'
    )
    reference = 'the 2025 "intrinsic fingerprint" claim (per-layer std of attention weights; withdrawn), reproduced exactly'
    measures = ("Pearson r between two models' per-layer std profiles of q, k, v, o (z-scored across layers), "
                "mean of the four")
    survives = "fine-tuning; defeated by function-preserving rescaling (q*c, k/c per layer, v*c, o/c)"
    exact = False
    calibrated = False
    fingerprint_version = 2  # v2: float32 partial sums of 256 terms (narrow_sums), not float64 throughout
    caveat = ("layer-permutation test: it tests whether the profiles align better than chance, not derivation "
              "against independence; independently trained models share a depth trend, so only a baseline "
              "population null says whether the value is unusual")

    def requirement(self, model: Model) -> str | None:
        roles = model.roles
        missing = [p for p in ATTENTION if not roles.has(p)]
        if missing:
            return f"no {', '.join(missing)} in every layer"
        if roles.depth < MIN_LAYERS:
            return f"{roles.depth} layer(s); a profile correlation needs at least {MIN_LAYERS}"
        return None

    def extract(self, model: Model, seed: int) -> Fingerprint:
        return self.extract_each([model], seed)[0]

    def extract_each(self, models: Sequence[Model], seed: int) -> list[Fingerprint]:
        """Every model's tensors reduced on one set of workers, while this process imports the test's scipy."""
        views = [[view for p in ATTENTION for view in model.roles.views(p)] for model in models]
        moments = iter(moments_of([view for each in views for view in each], meanwhile=preload))
        prints = []
        for model, each in zip(models, views):
            stds = np.array([next(moments).std(ddof=1) for _ in each]).reshape(len(ATTENTION), -1)
            prints.append(self.make(None, {"projections": list(ATTENTION), "depth": model.roles.depth, "ddof": 1},
                                    {"std": stds}))
        return prints

    def profiles(self, a: Fingerprint, b: Fingerprint) -> tuple[np.ndarray, np.ndarray]:
        """Both z-scored profiles on the common depth grid (the longer model's layers)."""
        length = max(a.arrays["std"].shape[1], b.arrays["std"].shape[1])
        return (zscore(resample(a.arrays["std"], length), "model A"),
                zscore(resample(b.arrays["std"], length), "model B"))

    def pairing(self, a: Fingerprint, b: Fingerprint) -> Pairing:
        za, zb = self.profiles(a, b)
        return self._pairing(a, b, za / np.sqrt(za.shape[1]), zb / np.sqrt(zb.shape[1]))

    def detail(self, details: Mapping[str, Any]) -> str | None:
        return "r per projection: " + ", ".join(f"{p.removeprefix('attn.')} {r:.3f}" for p, r in details["per_projection"].items())

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        projections = ("q", "k", "v", "o")
        profiles = [{p: details["profiles"][model][i] for i, p in enumerate(projections)} for model in ("A", "B")]
        return [Figure("layer_profiles", {"profiles_a": profiles[0], "profiles_b": profiles[1], "ylabel": "std of weights"},
                       "Per-layer standard deviation of the q, k, v, o projections of both models (before z-scoring), "
                       "over normalised depth.", per_model=True)]

    def _pairing(self, a: Fingerprint, b: Fingerprint, ua: np.ndarray, ub: np.ndarray) -> Pairing:
        """M from unit-length profile rows: r_p = <ua_p, ub_p>, statistic = mean over projections."""
        projections = a.meta["projections"]
        per_projection = {p: float(ua[i] @ ub[i]) for i, p in enumerate(projections)}
        depth_a, depth_b = a.arrays["std"].shape[1], b.arrays["std"].shape[1]
        details = {
            "per_projection": per_projection,
            "depths": [depth_a, depth_b],
            "resampled": "A" if depth_a < depth_b else "B" if depth_b < depth_a else None,
            "profiles": {"A": a.arrays["std"].tolist(), "B": b.arrays["std"].tolist()},
        }
        unit = "layers of B" if depth_a == depth_b else "points of the common depth grid (approximate: resampled)"
        return Pairing(np.einsum("pi,pj->ij", ua, ub) / len(projections), unit, details)


@dataclass(frozen=True)
class AttnStdDetrended(AttnStd):
    name = "attn-std-detrended"
    explanation = (
        'The same layer-by-layer spread, after removing the smooth trend over depth that all models of a '
        "design share. What is left are each model's own layer-to-layer quirks; a model copied from another "
        'keeps them, an independently trained one does not.'
    )
    reference = 'this project: attn-std with the shared depth trend removed (see DESIGN.md, method 2)'
    measures = ("attn-std with each z-scored profile's polynomial depth trend removed "
                "(degree up to 2, leaving at least 2 degrees of freedom) before correlating")
    survives = "fine-tuning; defeated by function-preserving rescaling, like attn-std"
    exact = False
    calibrated = False
    caveat = ("layer-permutation test of the detrended profiles: exact only if the layer-specific deviations are "
              "exchangeable across layers, which trained models need not satisfy; its calibration must be shown "
              "on independent pairs")
    fingerprint_name = "attn-std"
    population_heatmap = False  # the same profiles as attn-std: its heatmap and profile figure are not repeated

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        return []

    def pairing(self, a: Fingerprint, b: Fingerprint) -> Pairing:
        za, zb = self.profiles(a, b)
        length = za.shape[1]
        degree = min(MAX_TREND_DEGREE, length - 1 - MIN_RESIDUAL_DOF)
        if degree < 1:
            raise Inapplicable(f"{length} layers leave nothing after removing a depth trend "
                               f"(needs at least {2 + MIN_RESIDUAL_DOF})")
        depth = np.linspace(0.0, 1.0, length)
        basis = np.vander(depth, degree + 1)
        fitted = basis @ np.linalg.lstsq(basis, np.concatenate([za, zb]).T, rcond=None)[0]
        residuals = np.concatenate([za, zb]) - fitted.T
        ua = unit_vectors(residuals[: len(za)], "model A's detrended profile")
        ub = unit_vectors(residuals[len(za):], "model B's detrended profile")
        result = self._pairing(a, b, ua, ub)
        return Pairing(result.matrix, result.unit, {**result.details, "trend_degree": degree})
