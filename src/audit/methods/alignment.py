"""Recover how B's residual basis relates to A's: a signed permutation, or a rotation.

A copy can relabel, negate or rotate the coordinates of the residual stream
without changing what it computes (every matrix that reads or writes the
stream absorbs the change; RMSNorm gains are folded into the next matrices
first when the change is a rotation).  Any method that compares weights
coordinate by coordinate must undo that first.

What carries residual coordinates, per model and without seeing the other:

- the embedding (and output head) rows of a sample of tokens, chosen by a
  seeded hash of the token's *text*, so two tokenizers keep the same texts
  (or, with no tokenizer and equal vocabulary sizes, of the token *ids*:
  an assumption, recorded in the results);
- per-coordinate statistics that a permutation of the other indices leaves
  alone: RMSNorm gains, the column norms of q, k and v (gains folded in) and
  the row norms of o, per layer (averaged over layers when depths differ);
- odd moments of every embedding (and output head) column over all of the
  model's tokens (mean, skewness, mean sign, E[x|x|]/E[x^2]): they do not
  depend on which tokens the vocabulary holds in which order, and they change
  sign with the coordinate.  They stand in for the token rows when the two
  models share no tokens (no tokenizer and different vocabulary sizes, or
  unrelated tokenizers): without them a negated coordinate could not be told
  from its original, since norms and gains carry no sign.

The embeddings give a signed similarity between coordinates (a negated
coordinate correlates negatively), the statistics an unsigned one; their sum
is matched by optimal assignment (``scipy.optimize.linear_sum_assignment``).
With at least as many shared rows as coordinates, orthogonal Procrustes
(``scipy.linalg.orthogonal_procrustes``) also fits a rotation; it is used
when it explains the shared rows clearly better than the permutation does.

The alignment reads no MLP weight, so a test on the MLP stays a test on
weights the alignment did not see (see :mod:`audit.methods.aligned_match`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.linalg import orthogonal_procrustes

from audit.checkpoint import TensorView
from audit.checkpoint.tensor import require_finite
from audit.methods.base import Fingerprint, Inapplicable, Model
from audit.methods.common import sample_block
from audit.methods.matching import best_assignment
from audit.stats import hash_rank

MIN_SHARED_TOKENS = 16
ODD_MOMENTS = ("mean/sd", "skewness", "mean sign", "E[x|x|]/E[x^2]")
# A rotation is used only when it explains the shared rows almost entirely and clearly better than the best
# signed permutation, from at least two rows per coordinate.  Independent models' embeddings are partly
# rotation-alignable (same data, same token geometry: zoo independents reach a fit of 0.76), and a basis
# aligned that way puts functionally similar units side by side, which the unit test must not see.
ROTATION_MIN_FIT = 0.9
ROTATION_MARGIN = 0.25
ROTATION_ROWS_PER_COORDINATE = 2
SIGNED_PERMUTATION = "signed-permutation"
ROTATION = "rotation"
ATTENTION_INPUTS = ("attn.q", "attn.k", "attn.v")


def _gain(layer_roles, role: str, width: int) -> np.ndarray:
    view = layer_roles.get(role)
    if view is None or view.shape != (width,):
        return np.ones(width)
    gain = view.read()
    require_finite(gain, view.name)
    return gain


def column_norms(view: TensorView) -> np.ndarray:
    """Euclidean norm of every column of a [rows, cols] matrix, streamed by row blocks."""
    total = np.zeros(view.shape[1])
    for block in view.blocks(dtype=np.float32):  # squares in float32, sums in float64
        require_finite(block, view.name)
        total += np.square(block).sum(axis=0, dtype=np.float64)
    return np.sqrt(total)


def row_norms(view: TensorView) -> np.ndarray:
    """Euclidean norm of every row, streamed by row blocks."""
    parts = []
    for block in view.blocks(dtype=np.float32):
        require_finite(block, view.name)
        parts.append(np.sqrt(np.square(block).sum(axis=1, dtype=np.float64)))
    return np.concatenate(parts)


def _log(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values, 1e-30))


def odd_moments(view: TensorView) -> np.ndarray:
    """:data:`ODD_MOMENTS` of every column of a [tokens, width] matrix over all rows (len(ODD_MOMENTS) x width).

    Each is odd in the column (negating it negates them) and depends only on
    the column's distribution over tokens, not on the tokens' ids or order.
    One streamed pass; sums in float64.
    """
    sums = np.zeros((5, view.shape[1]))
    for block in view.blocks(dtype=np.float64):
        require_finite(block, view.name)
        sums += (block.sum(axis=0), np.square(block).sum(axis=0), (block ** 3).sum(axis=0),
                 np.sign(block).sum(axis=0), (block * np.abs(block)).sum(axis=0))
    m1, m2, m3, sign, signed_square = sums / view.shape[0]
    var = np.maximum(m2 - m1 * m1, 0.0)
    sd = np.sqrt(var)
    safe_sd, safe_m2 = np.where(sd > 0, sd, 1.0), np.where(m2 > 0, m2, 1.0)
    skew = (m3 - 3 * m1 * var - m1 ** 3) / safe_sd ** 3
    return np.array([m1 / safe_sd, np.where(sd > 0, skew, 0.0), sign, signed_square / safe_m2])


def token_keys(model: Model, rows: int) -> tuple[list[str], np.ndarray, str]:
    """Hex texts of the tokens the model can offer (ids below ``rows``), their ids, and how they are keyed."""
    vocabulary = model.vocabulary
    if vocabulary is not None:
        pairs = [(text.hex(), i) for i, text in enumerate(vocabulary.texts)
                 if text and i < rows and i not in vocabulary.byte_fallback]
        seen: dict[str, int] = {}
        for key, i in pairs:
            seen[key] = -1 if key in seen else i  # a text two ids stand for is ambiguous: left out
        keys = sorted(k for k, i in seen.items() if i >= 0)
        return keys, np.array([seen[k] for k in keys], dtype=np.int64), "text"
    if model.vocab:
        keys = sorted({t.encode("utf-8", "surrogatepass").hex(): i for t, i in model.vocab.items() if 0 <= i < rows}.items())
        return [k for k, _ in keys], np.array([i for _, i in keys], dtype=np.int64), "text"
    return [f"id:{i}" for i in range(rows)], np.arange(rows, dtype=np.int64), "id"


def sample_tokens(model: Model, seed: int, tokens: int, rows: int) -> tuple[dict, np.ndarray]:
    """The ``tokens`` tokens of lowest seeded hash rank among ids below ``rows``: their keys (``meta`` entries
    ``vocab_rows``, ``tokens``, ``token_key``) and ids.  Ranked by key, so two tokenizers keep the same texts."""
    keys, ids, how = token_keys(model, rows)
    order = np.argsort(hash_rank(seed, keys), kind="stable")[:tokens]
    return {"vocab_rows": rows, "tokens": [keys[i] for i in order], "token_key": how}, ids[order]


def shared_tokens(a: Fingerprint, b: Fingerprint) -> tuple[np.ndarray, np.ndarray]:
    """Positions in A's and in B's sampled tokens of the tokens both sampled (none when the keys differ in
    kind, or are ids of vocabularies of different sizes)."""
    none = np.zeros(0, dtype=np.int64)
    if a.meta["token_key"] is None or a.meta["token_key"] != b.meta["token_key"]:
        return none, none
    if a.meta["token_key"] == "id" and a.meta["vocab_rows"] != b.meta["vocab_rows"]:
        return none, none
    where_b = {t: i for i, t in enumerate(b.meta["tokens"])}
    pairs = [(i, where_b[t]) for i, t in enumerate(a.meta["tokens"]) if t in where_b]
    return np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64)


def extract_residual(model: Model, seed: int, tokens: int) -> tuple[dict, dict[str, np.ndarray]]:
    """What carries B's residual coordinates in this model: sampled token rows and per-coordinate statistics."""
    roles = model.roles
    embed = roles.globals.get("embed")
    width = next((layer.roles["attn.q"].shape[1] for layer in roles.layers if "attn.q" in layer.roles),
                 embed.shape[1] if embed is not None else None)
    if width is None:
        raise Inapplicable("cannot tell the residual width: no attention projection and no embedding")
    meta: dict = {"width": width, "depth": roles.depth, "vocab_rows": None, "tokens": [], "token_key": None}
    arrays: dict[str, np.ndarray] = {}
    head = roles.globals.get("head")
    sources = [(name, view) for name, view in (("embed", embed), ("head", head))
               if view is not None and len(view.shape) == 2 and view.shape[1] == width]
    if sources:
        chosen, ids = sample_tokens(model, seed, tokens, min(view.shape[0] for _, view in sources))
        meta.update(chosen)
        final = _gain(roles.globals, "norm.final", width)
        for name, view in sources:
            values = sample_block(view, ids, np.arange(width))
            require_finite(values, view.name)
            arrays[name] = (values * final if name == "head" else values).astype(np.float16)
        # the head reads the stream through the final norm's gain: a copy may negate the gain instead of the column
        arrays["odd"] = np.concatenate([odd_moments(view) * (np.sign(final) if name == "head" else 1.0)
                                        for name, view in sources]).astype(np.float32)
        meta["odd_kinds"] = [[name, moment] for name, _ in sources for moment in ODD_MOMENTS]
    features, kinds = [], []
    for layer in roles.layers:
        gain = _gain(layer.roles, "norm.attn", width)
        for role in ATTENTION_INPUTS:
            view = layer.roles.get(role)
            if view is not None and view.shape[1] == width:
                features.append(_log(column_norms(view) * np.abs(gain)))
                kinds.append([role, layer.index])
        view = layer.roles.get("attn.o")
        if view is not None and view.shape[0] == width:
            features.append(_log(row_norms(view)))
            kinds.append(["attn.o", layer.index])
        for role in ("norm.attn", "norm.mlp"):
            view = layer.roles.get(role)
            if view is not None and view.shape == (width,):
                features.append(np.abs(view.read()))
                kinds.append([role, layer.index])
    view = roles.globals.get("norm.final")
    if view is not None and view.shape == (width,):
        features.append(np.abs(view.read()))
        kinds.append(["norm.final", -1])
    if features:
        arrays["coord"] = np.array(features, dtype=np.float32)
    meta["coord_kinds"] = kinds
    return meta, arrays


@dataclass(frozen=True)
class Alignment:
    """B's residual basis expressed in A's: ``rows_b @ matrix.T`` are B's rows in A's coordinates.

    For a signed permutation, B's coordinate ``order[c]`` is A's coordinate
    ``c`` times ``signs[c]`` (applied by indexing, not a matrix product).
    """

    kind: str
    order: np.ndarray | None
    signs: np.ndarray | None
    matrix: np.ndarray | None
    shared_tokens: int
    token_key: str | None
    fit_permutation: float | None
    fit_rotation: float | None
    sources: tuple[str, ...]

    def to_a(self, rows_b: np.ndarray) -> np.ndarray:
        """B's vectors over residual coordinates (rows) in A's basis."""
        if self.kind == ROTATION:
            return rows_b @ self.matrix.T
        return rows_b[:, self.order] * self.signs

    def summary(self) -> dict:
        moved = None if self.order is None else int(np.sum(self.order != np.arange(self.order.size)))
        flipped = None if self.signs is None else int(np.sum(self.signs < 0))
        return {"kind": self.kind, "shared_tokens": self.shared_tokens, "token_key": self.token_key,
                "sources": list(self.sources), "coordinates_moved": moved, "coordinates_negated": flipped,
                "fit_permutation": self.fit_permutation, "fit_rotation": self.fit_rotation}


def _shared_rows(a: Fingerprint, b: Fingerprint) -> tuple[np.ndarray, np.ndarray, int]:
    ia, ib = shared_tokens(a, b)
    parts_a, parts_b = [], []
    for name in ("embed", "head"):
        if ia.size and name in a.arrays and name in b.arrays:
            parts_a.append(a.arrays[name][ia].astype(np.float64))
            parts_b.append(b.arrays[name][ib].astype(np.float64))
    if not parts_a:
        return np.zeros((0, a.meta["width"])), np.zeros((0, b.meta["width"])), 0
    return np.vstack(parts_a), np.vstack(parts_b), int(ia.size)


def _column_correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of x with every column of y (zero for a constant column)."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    nx, ny = np.linalg.norm(x, axis=0), np.linalg.norm(y, axis=0)
    return (x.T @ y) / np.outer(np.where(nx == 0, 1, nx), np.where(ny == 0, 1, ny))


def _coordinate_profiles(a: Fingerprint, b: Fingerprint) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-coordinate statistic profiles of A and B over the same features (rows), or None."""
    if "coord" not in a.arrays or "coord" not in b.arrays:
        return None
    kinds_a, kinds_b = [tuple(k) for k in a.meta["coord_kinds"]], [tuple(k) for k in b.meta["coord_kinds"]]
    fa, fb = a.arrays["coord"].astype(np.float64), b.arrays["coord"].astype(np.float64)
    if a.meta["depth"] == b.meta["depth"]:
        common = sorted(set(kinds_a) & set(kinds_b), key=lambda k: (k[1], k[0]))
        rows_a = np.array([fa[kinds_a.index(k)] for k in common])
        rows_b = np.array([fb[kinds_b.index(k)] for k in common])
    else:  # layers cannot be paired: average each kind over depth
        names = sorted({k[0] for k in kinds_a} & {k[0] for k in kinds_b})
        rows_a = np.array([fa[[i for i, k in enumerate(kinds_a) if k[0] == n]].mean(axis=0) for n in names])
        rows_b = np.array([fb[[i for i, k in enumerate(kinds_b) if k[0] == n]].mean(axis=0) for n in names])
    if rows_a.size == 0:
        return None
    keep = (rows_a.std(axis=1) > 1e-6 * np.abs(rows_a).mean(axis=1).clip(1e-30)) & \
           (rows_b.std(axis=1) > 1e-6 * np.abs(rows_b).mean(axis=1).clip(1e-30))
    if not keep.any():
        return None
    return rows_a[keep], rows_b[keep]


def _odd_profiles(a: Fingerprint, b: Fingerprint) -> tuple[np.ndarray, np.ndarray] | None:
    """Both models' odd column moments over the same (source, moment) rows, each row scaled to unit RMS."""
    if "odd" not in a.arrays or "odd" not in b.arrays:
        return None
    kinds_a, kinds_b = [tuple(k) for k in a.meta["odd_kinds"]], [tuple(k) for k in b.meta["odd_kinds"]]
    common = [k for k in kinds_a if k in kinds_b]
    if not common:
        return None
    rows_a = a.arrays["odd"][[kinds_a.index(k) for k in common]].astype(np.float64)
    rows_b = b.arrays["odd"][[kinds_b.index(k) for k in common]].astype(np.float64)
    scale = lambda rows: rows / np.sqrt(np.mean(np.square(rows), axis=1, keepdims=True)).clip(1e-30)  # noqa: E731
    return scale(rows_a), scale(rows_b)


def _fit(ea: np.ndarray, eb: np.ndarray, mapped_b: np.ndarray) -> float:
    """Share of B's shared rows explained by A's rows mapped into B's basis: 1 - |mapped - eb|^2 / |eb|^2."""
    return float(1.0 - np.square(mapped_b - eb).sum() / max(np.square(eb).sum(), 1e-300))


_RECENT: OrderedDict[tuple[str, str], Alignment] = OrderedDict()
_KEEP = 2


def align(a: Fingerprint, b: Fingerprint) -> Alignment:
    """B's residual basis in terms of A's, from the shared-token rows and the per-coordinate statistics.

    A pure function of the two fingerprints, remembered for the last few
    pairs (by content digest): aligned-match and layer-map test the same
    pair with the same fingerprint, and at 7B one alignment (a 4096 x 4096
    assignment and a Procrustes fit) costs over a minute.  Callers must not
    modify the returned arrays.
    """
    key = (a.digest(), b.digest())
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]
    found = _align(a, b)
    _RECENT[key] = found
    while len(_RECENT) > _KEEP:
        _RECENT.popitem(last=False)
    return found


def _align(a: Fingerprint, b: Fingerprint) -> Alignment:
    width = a.meta["width"]
    if b.meta["width"] != width:
        raise Inapplicable(f"residual widths differ ({width} vs {b.meta['width']}): no basis alignment")
    ea, eb, shared = _shared_rows(a, b)
    score = np.zeros((width, width))
    signed = None
    sources = []
    if shared >= MIN_SHARED_TOKENS:
        signed = _column_correlation(ea, eb)
        score += np.abs(signed)
        sources.append(f"embeddings of {shared} shared tokens")
    profiles = _coordinate_profiles(a, b)
    odd = _odd_profiles(a, b) if signed is None else None
    if odd is not None:  # their magnitudes also help find the permutation
        profiles = (np.vstack([profiles[0], np.abs(odd[0])]), np.vstack([profiles[1], np.abs(odd[1])])) \
            if profiles is not None else (np.abs(odd[0]), np.abs(odd[1]))
    if profiles is not None:
        pa, pb = profiles
        score += _column_correlation(pa, pb)
        sources.append(f"{pa.shape[0]} per-coordinate statistics (norm gains, q/k/v column and o row norms"
                       f"{', odd moments of the embedding columns' if odd is not None else ''})")
    if not sources:
        raise Inapplicable("nothing carries the residual coordinates of both models (no shared tokens, no norms "
                           "or attention weights)")
    order = best_assignment(score)
    if signed is not None:
        signs = np.where(signed[np.arange(width), order] < 0, -1.0, 1.0)
    elif odd is not None:  # a negated coordinate negates its odd moments
        signs = np.where(np.einsum("kc,kc->c", odd[0], odd[1][:, order]) < 0, -1.0, 1.0)
        sources.append("signs from the odd moments of the embedding columns")
    else:
        signs = np.ones(width)
    token_key = a.meta["token_key"] if shared else None
    if shared == 0 or ea.shape[0] < ROTATION_ROWS_PER_COORDINATE * width:
        return Alignment(SIGNED_PERMUTATION, order, signs, None, shared, token_key, None, None, tuple(sources))
    permuted = np.zeros((width, width))
    permuted[np.arange(width), order] = signs  # B = A @ permuted
    rotation, _ = orthogonal_procrustes(ea, eb)
    fit_perm, fit_rot = _fit(ea, eb, ea @ permuted), _fit(ea, eb, ea @ rotation)
    if fit_rot >= ROTATION_MIN_FIT and fit_rot - fit_perm > ROTATION_MARGIN:
        return Alignment(ROTATION, None, None, rotation, shared, token_key, fit_perm, fit_rot,
                         (*sources, "orthogonal Procrustes on the shared-token rows"))
    return Alignment(SIGNED_PERMUTATION, order, signs, None, shared, token_key, fit_perm, fit_rot, tuple(sources))
