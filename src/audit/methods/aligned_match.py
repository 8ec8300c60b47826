"""aligned-match: hidden-unit agreement after residual-basis alignment, with an exact fixed-point null.

What it defeats: a copy disguised by permuting (and negating, or rotating)
the residual basis, permuting and negating MLP hidden units, and rescaling
q/k, v/o and up/down (per unit or per matrix), with or without fine-tuning.

1. Align B's residual basis to A's (:mod:`audit.methods.alignment`) from the
   embedding/head rows of shared tokens, norm gains and the q/k/v/o norms.
   No MLP weight enters the alignment.
2. In each layer, express B's MLP weights in A's basis (norm gains folded
   into gate and up first, so a copy whose gains were folded away compares
   like any other) and match A's hidden units to B's twice, by optimal
   assignment (``scipy.optimize.linear_sum_assignment``):
   sigma_in from the input side (cosine of gate rows plus |cosine| of up
   rows) and sigma_out from the output side (|cosine| of down columns).
   Cosines ignore any rescaling of a unit; absolute values ignore a unit's
   sign flip (up and down negated together).
3. The test counts K, the number of A's units on which the two matchings
   agree (the reported statistic is K over the units matched, with the best
   block pair of each layer when layers hold several MLP blocks).  A derived model recovers the same hidden-unit correspondence
   from both sides, whatever permutation was applied (K near n).

The null, and what "exact" means here.  If A and B were trained
independently, a unit of A has no counterpart in B; the input-side matching
then pairs A's units with B's by chance, and so does the output-side one.
The test assumes that under H0 the output-side matching is the input-side
one composed with a uniformly random permutation of B's units (B's units
are exchangeable between the two sides).  Given that assumption, K is the
number of fixed points of a uniform random permutation of m candidates
within the n matched units, whose distribution is known exactly
(:mod:`audit.stats.fixed_points`): the p-value is exact, with true floor
1/(m)_n (1/n! for equal widths), and conditioning on the alignment costs
nothing because the alignment never reads an MLP weight.  The assumption is
not implied by the permutation symmetry of training alone (a unit's input
and output weights are trained together, and a basis in which both models
hold the same privileged directions would make their matchings agree), so
the calibration of this test on independent pairs, plain and disguised, is
measured on the reference zoo (``benchmarks/accuracy.py``).

Zhu et al.'s robust test compares the matchings from gate rows and from up
rows with a Spearman t-approximation: neither exact nor calibrated in this
project.  This method differs in three ways: both matchings are made in an
aligned residual basis, they come from the two ends of the unit (input and
output), and agreement is counted exactly (fixed points, no approximation).

Layers: layer i of A with layer i of B (equal depths; ``layer-map`` handles
depth changes).  Under the assumption the per-layer permutations are
independent (each layer's units can be permuted on their own), so the sum
of K over layers has the convolution of the per-layer nulls as its exact
null.  Models whose layers hold several MLP blocks (MoE experts) instead
take the Bonferroni minimum over every (layer, block pair) tested.

Fingerprint: the alignment's token rows and per-coordinate statistics, and
per MLP block the gate and up rows and down columns of its ``units``
highest-scoring hidden units (score: product of the gate-row, up-row and
down-column norms, which a permutation or rescaling of the units leaves
alone, so a copy keeps the same units), float16, within ``budget`` bytes.
Cost in power when units are subsampled: a fine-tuned copy keeps only part
of the selected set (scores drift), and a unit whose partner was not kept
cannot agree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from audit.checkpoint.tensor import require_finite
from audit.methods.alignment import Alignment, align, column_norms, extract_residual, row_norms
from audit.methods.base import Figure, Fingerprint, Inapplicable, Model
from audit.methods.common import layer_budget, mlp_blocks, sample_block
from audit.methods.agreement import Agreement, LayerwiseAgreement, combine, count_agreement
from audit.methods.matching import unit_rows
from audit.stats import TestResult

F16_BYTES = 2
MIN_UNITS = 32
ASSUMPTION = "assumes the output-side matching is exchangeable given the input-side one"


def single_threaded_blas(test):
    """Run a test with one BLAS thread: its products are small (units x units), and on a busy machine
    multi-threaded BLAS waits on the other threads far longer than it computes (measured on the zoo's 630
    pairs on 2 loaded cores: 7 min with the default threads, 19 s with one)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return test(*args, **kwargs)

    return wrapper


def _without_common_modes(rows: np.ndarray, count: int) -> np.ndarray:
    """Unit rows with their ``count`` leading principal directions projected out, renormalised.

    Trained units share a few directions (every unit reads the same dominant
    residual directions); two independent models aligned on their residual
    basis would pair units by how much of those they carry, on both sides at
    once (measured on the zoo's independent pairs: 1.19 agreements per layer
    instead of 1 in the first layer without this, 1.05 with 8 directions
    removed).  At most one direction per 8 coordinates is removed.  The
    directions are found within one model, from rows scaled to unit
    length and without centring, so a permutation, sign flip or rescaling of
    units, or a change of the residual basis, changes nothing.
    """
    rows = unit_rows(rows)
    count = min(count, rows.shape[1] // 8, rows.shape[0] // 2)
    if count <= 0:
        return rows
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    top = vt[:count]
    return unit_rows(rows - (rows @ top.T) @ top)


class UnitSides:
    """A block's units ready to match: unit-length input-side and output-side rows (B's in A's basis)."""

    def __init__(self, fp: Fingerprint, layer: str, block: str, alignment: Alignment | None, common: int) -> None:
        def rows(role: str) -> np.ndarray | None:
            key = f"{role}.{layer}.{block}"
            if key not in fp.arrays:
                return None
            values = _without_common_modes(fp.arrays[key].astype(np.float32), common)
            return alignment.to_a(values) if alignment is not None else values

        self.gate, self.up, self.down = rows("gate"), rows("up"), rows("down")

    def similarities(self, other: UnitSides) -> tuple[np.ndarray, np.ndarray]:
        """Input-side and output-side similarity of every unit here with every unit of ``other``."""
        if self.gate is not None and other.gate is not None:
            inputs = self.gate @ other.gate.T + np.abs(self.up @ other.up.T)
        else:
            inputs = self.up @ other.up.T
        return inputs, np.abs(self.down @ other.down.T)


def agreement(sides_a: UnitSides, sides_b: UnitSides, layer_a: int, layer_b: int, block_a: str, block_b: str) -> Agreement:
    """Match the smaller side's units into the larger's from each end; count where the two agree."""
    return count_agreement(*sides_a.similarities(sides_b), layer_a, layer_b, block_a, block_b)


def extract_units(method: AlignedMatch, model: Model, seed: int) -> Fingerprint:
    """The fingerprint shared by aligned-match and layer-map (see the module docstring)."""
    meta, arrays = extract_residual(model, seed, method.tokens)
    width = meta["width"]
    blocks = [{n: b for n, b in mlp_blocks(layer).items() if "up" in b and "down" in b and b["up"].shape[1] == width
               and b["down"].shape == (width, b["up"].shape[0])} for layer in model.roles.layers]
    if not any(blocks):
        raise Inapplicable("no MLP with up and down projections of the residual width")
    left = max(0, method.budget - sum(a.nbytes for a in arrays.values()))
    unit_bytes = 3 * width * F16_BYTES
    most = max(len(b) for b in blocks)
    keep = int(min(method.units, max(MIN_UNITS, left // max(1, unit_bytes * model.roles.depth * most))))
    per_layer = max(sum(min(v["up"].shape[0], keep) for v in b.values()) for b in blocks)
    layers = [i for i in layer_budget(left, per_layer * unit_bytes, model.roles.depth) if blocks[i]]
    meta["blocks"] = {}
    for index in layers:
        layer = model.roles.layers[index]
        view = layer.roles.get("norm.mlp")
        gain = view.read() if view is not None and view.shape == (width,) else np.ones(width)
        require_finite(gain, "norm.mlp gain")
        meta["blocks"][str(index)] = {}
        for name, block in blocks[index].items():
            score = row_norms(block["up"]) * column_norms(block["down"])
            if "gate" in block:
                score = score * row_norms(block["gate"])
            units = np.sort(np.argsort(-score, kind="stable")[:keep])
            for role in ("gate", "up"):
                if role in block:
                    arrays[f"{role}.{index}.{name}"] = (sample_block(block[role], units, np.arange(width)) * gain).astype(np.float16)
            arrays[f"down.{index}.{name}"] = sample_block(block["down"], np.arange(width), units).T.astype(np.float16)
            meta["blocks"][str(index)][name] = int(units.size)
    for key, values in arrays.items():
        if not np.all(np.isfinite(values)):
            raise Inapplicable(f"{key}: values beyond float16's range")
    return method.make(seed, meta, arrays)


def describe_alignment(alignment: Mapping[str, Any]) -> str:
    """One line: how B's residual basis was aligned to A's, and on what."""
    if alignment["kind"] == "rotation":
        found = f"a rotation (orthogonal Procrustes, fit {alignment['fit_rotation']:.3f} against {alignment['fit_permutation']:.3f} for the best signed permutation)"
    else:
        found = (f"a signed permutation ({alignment['coordinates_moved']} coordinates moved, "
                 f"{alignment['coordinates_negated']} negated)")
    tokens = ""
    if alignment["shared_tokens"]:
        tokens = (" by token text" if alignment["token_key"] == "text" else
                  " by token id (no tokenizer: equal vocabulary sizes assumed to mean the same tokens)")
    return f"residual basis of B aligned to A's: {found}; from {'; '.join(alignment['sources'])}{tokens}"


@dataclass(frozen=True)
class AlignedMatch(LayerwiseAgreement):
    tokens: int = 4096
    units: int = 256
    budget: int = 128 << 20
    common_modes: int = 8

    name = "aligned-match"
    explanation = (
        "A copy can be disguised without changing what it computes: its internal coordinates relabelled, sign-"
        "flipped or rotated, its hidden units shuffled and rescaled. This method first lines up the two models' "
        "internal coordinates (through the words both know, the normalisation weights and the attention "
        "weights), then pairs the hidden units of each feed-forward layer twice: once from the weights that "
        "read into a unit and once from the weights it writes out. A copy gives the same pairing both times, "
        "however it was shuffled; for independently trained models the two pairings agree only by chance, "
        "and how often chance does so is known exactly."
    )
    reference = ("this project (issue 12): residual alignment as in Zhu et al., ICML 2025, with an exact "
                 "fixed-point count of the agreement between input-side and output-side unit matchings")
    measures = ("after aligning B's residual basis to A's (shared tokens, norms, attention; no MLP weight), per layer "
                "the number of hidden units on which the matchings from gate/up rows and from down columns agree")
    survives = ("fine-tuning; permutations, sign flips and rotations of the residual basis (norm gains folded or "
                "not); permutations, sign flips and rescaling of hidden units; q/k, v/o, up/down rescaling; "
                "not depth changes (see layer-map)")
    exact = True
    caveat = ("exact under the stated assumption that, for independent models, the output-side matching is the "
              "input-side one composed with a random permutation of B's units; calibration on independent zoo "
              "pairs is measured, not implied")
    correlation = False
    discrete = True
    reads_embeddings = False  # token rows only align the bases; the evidence is MLP agreement
    tunable = ("budget",)
    fingerprint_version = 2  # v2: odd moments of the embedding columns, for signs without shared tokens

    def fingerprint_params(self) -> dict:
        return {"tokens": self.tokens, "units": self.units, "budget": self.budget}

    def requirement(self, model: Model) -> str | None:
        if not any("up" in b and "down" in b for layer in model.roles.layers for b in mlp_blocks(layer).values()):
            return "no MLP with up and down projections"
        return None

    def extract(self, model: Model, seed: int) -> Fingerprint:
        return extract_units(self, model, seed)

    def unit_mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if a.meta["width"] != b.meta["width"]:
            return f"residual widths differ ({a.meta['width']} vs {b.meta['width']})"
        return None

    def detail(self, details: Mapping[str, Any]) -> str | None:
        return describe_alignment(details["alignment"])

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        if len({b["layer_a"] for b in details["blocks"]}) != len(details["blocks"]):
            return []
        return [Figure("layer_evidence", {"log10_pvalues": [b["log10_pvalue"] for b in details["blocks"]]},
                       f"Per-layer evidence of {self.name}: -log10 of the exact p-value of each layer's unit agreement.")]

    @single_threaded_blas
    def test(self, a: Fingerprint, b: Fingerprint, seed: int) -> TestResult:
        alignment = align(a, b)
        found = []
        for layer, blocks_a in a.meta["blocks"].items():
            blocks_b = b.meta["blocks"].get(layer, {})
            for x in blocks_a:
                sides_a = UnitSides(a, layer, x, None, self.common_modes)
                for y in blocks_b:
                    sides_b = UnitSides(b, layer, y, alignment, self.common_modes)
                    found.append(agreement(sides_a, sides_b, int(layer), int(layer), x, y))
        if not found:
            raise Inapplicable("no layer holds an MLP block in both fingerprints")
        return combine(found, {"alignment": alignment.summary()}, ASSUMPTION)
