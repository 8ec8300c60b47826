"""head-match: attention heads matched from basis-free token sketches, with an exact fixed-point null.

What it defeats: a copy whose attention heads were permuted (kv groups and
the query heads within them), whose heads were transformed inside (v -> A v
with o -> o A^-1; q -> R q with k -> R k for rotations that commute with
RoPE; q * c with k / c), and whose residual basis was permuted, sign-flipped
or rotated (norm gains folded or not), with or without fine-tuning.  No
residual alignment is needed, so a rotated copy counts here even where the
alignment's Procrustes fit stays under its threshold.

Sketches.  Per model, T tokens are chosen exactly as the residual alignment
chooses them (a seeded hash of the token's text, so two tokenizers keep the
same texts; with no tokenizer and equal vocabulary sizes, of the token id:
an assumption, reported).  With E the T x d input-embedding rows of those
tokens and g the layer's attention-input norm gain, each head gets four
hd x T sketches:

    Q_h diag(g) E^T,   K_h diag(g) E^T,   V_h diag(g) E^T,   (E O_h)^T

(O_h: the head's hd columns of o_proj).  A change of the residual basis
x -> x F (F a signed permutation with the gains permuted alongside, or an
orthogonal map with the gains folded in first) turns E into E F, every
reader W diag(g) into W diag(g) F and every writer O into F^T O, so each
product is unchanged.  A head's sketch is used only through its row space
(a subspace of token space R^T), which an invertible map acting on the
head's hd coordinates leaves alone: that covers v/o, q/k and RoPE-commuting
transforms.  Sketches are centred over the tokens first (the mean token is
a direction every head of every model shares).

Test.  On the tokens both fingerprints sampled, each sketch is reduced to an
orthonormal basis of its row space (SVD), and head i of A and head j of B
get the similarity ||U_i U_j^T||_F^2 / hd (mean squared cosine of the
principal angles; about hd / T by chance).  Heads are matched four times by
optimal assignment (``scipy.optimize.linear_sum_assignment``), from
disjoint tensors: query heads from Q and from O, key/value heads from K and
from V.  The count per layer and side is the number of heads on which the
two matchings agree (K vs V counts kv heads; with multi-head attention every
head is its own kv head).  A copy agrees on every head, whatever
permutation was applied; the results keep each count's Q-side (K-side)
matching, the recovered head correspondence (for each head of the model with
fewer heads, its partner in the other).

The null, and what "exact" means here.  The test assumes that for
independently trained models the O-side matching is the Q-side one composed
with a uniformly random permutation of B's query heads, and the V-side one
the K-side one composed with a uniformly random permutation of B's kv heads.
Each count is then the number of fixed points of a uniform random
permutation (:mod:`audit.stats.fixed_points`), the counts of different
layers and sides are independent, and their sum has the convolution of
their laws as its exact null (true floor: the product of 1/n! over the
counts).  The assumption holds exactly for i.i.d. initialised weights (B's
q, k, v and o heads are then independent and exchangeable); for trained
models it is not implied (a head's q and o are trained together, and two
models may grow functionally similar heads), so the calibration on
independent pairs, plain and disguised, is measured on the reference zoo
(``benchmarks/alignment_on_zoo.py``).  Why query against output and key
against value rather than the QK circuit against the OV circuit: under
grouped-query attention the k and v of a group are shared by its query
heads, so a matching that reads them is invariant only under permutations
that respect the groups, whose fixed-point law has a heavier tail (P(all
agree) = 1/|group permutations| instead of 1/n!); matching each tensor on
its own units keeps every count on the uniform-permutation law (and gives
two counts per layer instead of one: on the reference zoo's 4-layer, 4-head
models a floor of 9e-12 instead of 3e-6).

Layers: layer i of A with layer i of B (equal depths; ``layer-map`` handles
depth changes).  Fingerprint: the four sketches of every head, float16,
each head's sketch scaled to a maximum of 1 (row spaces ignore scale), for
as many evenly spread layers as ``budget`` bytes allow (at 32 heads of 128
and T = 512, 16 MiB per layer).  Biases (q/k/v bias, LayerNorm bias) are
not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from audit.checkpoint import TensorView
from audit.checkpoint.tensor import require_finite
from audit.methods.agreement import Agreement, LayerwiseAgreement, combine, count_agreement, joint_log_pmf
from audit.methods.aligned_match import single_threaded_blas
from audit.methods.alignment import sample_tokens, shared_tokens
from audit.methods.base import Figure, Fingerprint, Inapplicable, Model
from audit.methods.common import layer_budget, sample_block
from audit.roles import Layer
from audit.stats import TestResult
from audit.stats.fixed_points import log10_tail

F16_BYTES = 2
MIN_TOKENS_PER_HEAD_DIM = 2  # shared tokens needed per head dimension: a head's row space must leave room
SIDES = (("q", "o", "query"), ("k", "v", "kv"))  # (first matching, second matching, units counted)
ASSUMPTION = ("assumes that for independent models the O-side (V-side) matching is the Q-side (K-side) one composed "
              "with a uniformly random permutation of B's query (kv) heads")
RANK_TOLERANCE = 1e-3  # singular values below this share of a sketch's largest are float16 noise


def _attention(layer: Layer, width: int, heads: int, kv_heads: int, head_dim: int) -> dict[str, TensorView] | None:
    """The layer's q, k, v, o views when their shapes fit the head counts and the residual width."""
    views = {r: layer.roles.get(f"attn.{r}") for r in ("q", "k", "v", "o")}
    if any(v is None for v in views.values()):
        return None
    expected = {"q": (heads * head_dim, width), "k": (kv_heads * head_dim, width), "v": (kv_heads * head_dim, width),
                "o": (width, heads * head_dim)}
    return views if all(views[r].shape == expected[r] for r in views) else None


def _reader_sketch(view: TensorView, inputs: np.ndarray, head_dim: int) -> np.ndarray:
    """(W diag(g) E^T) by head: [heads, head_dim, T], streamed by row blocks of W."""
    parts = []
    for block in view.blocks(dtype=np.float32):
        require_finite(block, view.name)
        parts.append(block @ inputs.T)
    return np.vstack(parts).reshape(-1, head_dim, inputs.shape[0])


def _writer_sketch(view: TensorView, embedding: np.ndarray, head_dim: int) -> np.ndarray:
    """(E O_h)^T by head: [heads, head_dim, T], streamed by row blocks of O (rows are residual coordinates)."""
    total = np.zeros((embedding.shape[0], view.shape[1]), dtype=np.float64)
    start = 0
    for block in view.blocks(dtype=np.float32):
        require_finite(block, view.name)
        total += embedding[:, start:start + block.shape[0]] @ block
        start += block.shape[0]
    return total.T.reshape(-1, head_dim, embedding.shape[0])


def _scaled(sketch: np.ndarray) -> np.ndarray:
    """Each head's sketch divided by its largest magnitude, as float16 (row spaces ignore scale)."""
    top = np.abs(sketch).max(axis=(1, 2), keepdims=True)
    return (sketch / np.where(top == 0, 1.0, top)).astype(np.float16)


def _bases(sketch: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Orthonormal bases of each head's row space on the shared tokens, centred over them: [heads, hd, T'].

    From the eigendecomposition of each head's hd x hd Gram matrix S S^T = W L W^T: the rows of
    L^-1/2 W^T S are orthonormal and span S's row space (several times faster than an SVD of S when T'
    exceeds hd).  Directions whose singular value sqrt(L) is float16 noise are zeroed (a rank-deficient
    head counts only its rank).
    """
    values = sketch[:, :, columns].astype(np.float64)
    values -= values.mean(axis=2, keepdims=True)
    eigenvalues, vectors = np.linalg.eigh(np.matmul(values, values.transpose(0, 2, 1)))
    singular = np.sqrt(np.maximum(eigenvalues, 0.0))
    keep = singular > RANK_TOLERANCE * np.maximum(singular[:, -1:], 1e-300)
    scale = np.where(keep, 1.0 / np.where(keep, singular, 1.0), 0.0)
    return np.matmul(vectors.transpose(0, 2, 1), values) * scale[:, :, None]


def overlaps(bases_a: np.ndarray, bases_b: np.ndarray) -> np.ndarray:
    """||U_i U_j^T||_F^2 / hd for every head i of A and j of B (mean squared cosine of principal angles).

    Computed whichever way costs fewer multiplications: from the heads' cross products (H hd x H hd
    entries, each a sum over T tokens), or as trace(P_i P_j) from the row-space projectors P = U^T U
    (T x T each), which is cheaper once hd * H exceeds about 2 T: at 7B shape (32 heads of 128, T = 512),
    3.5 times fewer.
    """
    heads_a, dim, tokens = bases_a.shape
    heads_b = bases_b.shape[0]
    if heads_a * heads_b * dim * dim * tokens <= (heads_a + heads_b) * tokens * tokens * dim + heads_a * heads_b * tokens * tokens:
        cross = bases_a.reshape(heads_a * dim, tokens) @ bases_b.reshape(heads_b * dim, tokens).T
        return np.square(cross).reshape(heads_a, dim, heads_b, dim).sum(axis=(1, 3)) / dim
    projectors_a = np.matmul(bases_a.transpose(0, 2, 1), bases_a).reshape(heads_a, tokens * tokens)
    projectors_b = np.matmul(bases_b.transpose(0, 2, 1), bases_b).reshape(heads_b, tokens * tokens)
    return projectors_a @ projectors_b.T / dim


@dataclass(frozen=True)
class HeadMatch(LayerwiseAgreement):
    tokens: int = 512
    budget: int = 64 << 20

    name = "head-match"
    explanation = (
        "Attention is split into heads, and a copy can shuffle its heads, transform each head inside, and "
        "relabel or rotate its internal coordinates without changing what it computes. This method describes "
        "every head by what it does to a fixed set of words both models know (which words it looks for, which "
        "it looks at, what it passes on and what it writes back), in a form that none of those disguises "
        "changes. It then pairs the heads of the two models from two different sets of weights: a copy gives "
        "the same pairing both times, independently trained models agree only by chance, and how often chance "
        "does so is known exactly."
    )
    reference = ("this project (issue 12): basis-free token sketches of attention heads (products of attention weights "
                 "with shared-token embeddings, after Zeng et al., HuRef, NeurIPS 2024, and AWM, ICLR 2026), compared "
                 "by principal angles, with an exact fixed-point count of the agreement between matchings from "
                 "disjoint tensors")
    measures = ("per layer, the number of attention heads on which the matchings from query and from output sketches "
                "agree, plus the kv heads on which those from key and from value sketches agree (sketch: the head's "
                "weights applied to shared-token embeddings, compared by principal angles of row spaces)")
    survives = ("fine-tuning; permutations of heads (kv groups and query heads within them); invertible transforms "
                "inside a head (v/o, q/k rescaling, RoPE-commuting rotations); permutations, sign flips and rotations "
                "of the residual basis (norm gains folded or not); not depth changes (see layer-map)")
    exact = True
    caveat = ("exact under the stated assumption that, for independent models, the O-side (V-side) head matching is "
              "the Q-side (K-side) one composed with a uniformly random permutation of B's heads; holds exactly for "
              "i.i.d. initialised weights, and its calibration on independent zoo pairs is measured, not implied")
    correlation = False
    discrete = True
    reads_embeddings = False  # embeddings only probe the heads: shared embeddings with independent heads agree by chance
    tunable = ("budget",)

    def fingerprint_params(self) -> dict:
        return {"tokens": self.tokens, "budget": self.budget}

    def requirement(self, model: Model) -> str | None:
        roles = model.roles
        shape = roles.attention
        if not (shape.heads and shape.kv_heads and shape.head_dim):
            return "attention head counts unknown (config.json with num_attention_heads is needed)"
        if "embed" not in roles.globals:
            return "no input embedding"
        width = roles.globals["embed"].shape[1]
        if not any(_attention(layer, width, shape.heads, shape.kv_heads, shape.head_dim) for layer in roles.layers):
            return (f"no layer whose q, k, v, o fit {shape.heads} heads ({shape.kv_heads} kv) of {shape.head_dim} "
                    f"and width {width}")
        return None

    def extract(self, model: Model, seed: int) -> Fingerprint:
        if reason := self.requirement(model):
            raise Inapplicable(reason)
        roles = model.roles
        shape, embed = roles.attention, roles.globals["embed"]
        width = embed.shape[1]
        heads, kv_heads, head_dim = shape.heads, shape.kv_heads, shape.head_dim
        meta, ids = sample_tokens(model, seed, self.tokens, embed.shape[0])
        embedding = sample_block(embed, ids, np.arange(width))
        require_finite(embedding, embed.name)
        views = [_attention(layer, width, heads, kv_heads, head_dim) for layer in roles.layers]
        per_layer = 2 * (heads + kv_heads) * head_dim * ids.size * F16_BYTES
        layers = [i for i in layer_budget(self.budget, per_layer, roles.depth) if views[i] is not None]
        arrays: dict[str, np.ndarray] = {}
        for index in layers:
            layer = roles.layers[index]
            gain = layer.roles.get("norm.attn")
            g = gain.read() if gain is not None and gain.shape == (width,) else np.ones(width)
            require_finite(g, "norm.attn gain")
            inputs = (embedding * g).astype(np.float32)
            for role in ("q", "k", "v"):
                arrays[f"{role}.{index}"] = _scaled(_reader_sketch(views[index][role], inputs, head_dim))
            arrays[f"o.{index}"] = _scaled(_writer_sketch(views[index]["o"], embedding, head_dim))
        meta.update(depth=roles.depth, width=width, heads=heads, kv_heads=kv_heads, head_dim=head_dim, layers=layers)
        return self.make(seed, meta, arrays)

    def unit_mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        if a.meta["head_dim"] != b.meta["head_dim"]:
            return f"head dimensions differ ({a.meta['head_dim']} vs {b.meta['head_dim']})"
        return None

    def detail(self, details: Mapping[str, Any]) -> str | None:
        key = ("by token text" if details["token_key"] == "text" else
               "by token id (no tokenizer: equal vocabulary sizes assumed to mean the same tokens)")
        return (f"heads sketched on {details['shared_tokens']} shared tokens {key}; query heads matched from Q and O, "
                f"kv heads from K and V, in {details['layers']} layers")

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        by_layer: dict[int, list[dict]] = {}
        for block in details["blocks"]:
            by_layer.setdefault(block["layer_a"], []).append(block)
        evidence = []
        for layer in sorted(by_layer):
            log_pmf = joint_log_pmf((block["units"], block["candidates"]) for block in by_layer[layer])
            evidence.append(log10_tail(log_pmf, sum(block["agreements"] for block in by_layer[layer])))
        return [Figure("layer_evidence", {"log10_pvalues": evidence},
                       f"Per-layer evidence of {self.name}: -log10 of the exact p-value of each sketched layer's "
                       "query-head and kv-head agreements together.")]

    @single_threaded_blas
    def test(self, a: Fingerprint, b: Fingerprint, seed: int) -> TestResult:
        ia, ib = shared_tokens(a, b)
        need = MIN_TOKENS_PER_HEAD_DIM * a.meta["head_dim"]
        if ia.size < need:
            raise Inapplicable(f"{ia.size} shared tokens; head-match needs at least {need} "
                               f"({MIN_TOKENS_PER_HEAD_DIM} x head dimension {a.meta['head_dim']})")
        layers = sorted(set(a.meta["layers"]) & set(b.meta["layers"]))
        if not layers:
            raise Inapplicable("no layer sketched in both fingerprints")
        found: list[Agreement] = []
        for layer in layers:
            for first, second, units in SIDES:
                sim = [overlaps(_bases(a.arrays[f"{r}.{layer}"], ia), _bases(b.arrays[f"{r}.{layer}"], ib))
                       for r in (first, second)]
                found.append(count_agreement(sim[0], sim[1], layer, layer, units, units, keep_matching=True))
        details = {"shared_tokens": int(ia.size), "token_key": a.meta["token_key"], "layers": len(layers)}
        return combine(found, details, ASSUMPTION)
