"""Function-preserving disguises of a LLaMA-style checkpoint, and depth changes.

An accused party can hide a copy without changing what it computes (DESIGN.md, Pitfalls).
These transforms produce such copies with known ground truth, so that the methods' tests
and the reference zoo can check that every disguise is seen.  Each takes the named tensors
(Hugging Face Llama / Mixtral / Qwen2 names, ``[out, in]`` layout) and the HF config, and
returns a :class:`Disguised`: new tensors, new config and a JSON-able record of what was
drawn (the permutations, signs, factors, layer map).  Every random choice comes from the
``rng`` argument, so a seeded generator gives the same disguise every time.

Function-preserving (equal logits, :mod:`audit.testing.forward` proves it in the tests):
:func:`permute_residual` (with sign flips), :func:`rotate_residual` (orthogonal, SliceGPT
style, norm gains folded into the next matrices first), :func:`permute_units`,
:func:`permute_heads`, :func:`transform_heads`, :func:`rescale`, :func:`fold_norms`, and
:func:`duplicate_layers` with ``zero_output=True`` (an inserted block that writes nothing).
Not function-preserving: :func:`drop_layers` and plain :func:`duplicate_layers` (they change
depth; a real deriver heals them by fine-tuning).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from audit.testing.forward import Shape, Tensors

LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)$")
# matrices whose input (column) space is the residual stream, and those that write to it
READS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.gate_proj.weight",
         "mlp.up_proj.weight", "block_sparse_moe.gate.weight", ".w1.weight", ".w3.weight")
WRITES = ("self_attn.o_proj.weight", "mlp.down_proj.weight", ".w2.weight")
GAINS = ("input_layernorm.weight", "post_attention_layernorm.weight")
NEUTRAL = ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias")  # live in head space


@dataclass(frozen=True)
class Disguised:
    """A transformed model: tensors, HF config, and what was drawn (JSON-able)."""

    tensors: Tensors
    config: dict
    record: dict


def _kind(name: str) -> str:
    """Where a tensor meets the residual stream: embed, head, gain, reads, writes or neutral."""
    if name == "model.embed_tokens.weight":
        return "embed"
    if name == "lm_head.weight":
        return "reads"
    if name == "model.norm.weight":
        return "gain"
    m = LAYER.match(name)
    rest = m.group(2) if m else ""
    if rest in GAINS:
        return "gain"
    if rest.endswith(READS):
        return "reads"
    if rest.endswith(WRITES):
        return "writes"
    if rest in NEUTRAL:
        return "neutral"
    raise ValueError(f"disguise: unsupported tensor {name!r} (LLaMA, Mixtral and Qwen2 names only)")


def _layers(tensors: Tensors) -> dict[int, dict[str, str]]:
    """layer -> {name within the layer: full name}."""
    out: dict[int, dict[str, str]] = {}
    for name in tensors:
        if m := LAYER.match(name):
            out.setdefault(int(m.group(1)), {})[m.group(2)] = name
    return out


def _basis_change(tensors: Tensors, forward: np.ndarray, gain_perm: np.ndarray | None) -> Tensors:
    """Apply x -> x @ forward to the residual stream: readers and the embedding take ``forward``
    on their input side, writers its transpose on their output side; gains are permuted by
    ``gain_perm`` (None: they must be folded already, i.e. all ones)."""
    out = {}
    for name, value in tensors.items():
        kind = _kind(name)
        if kind in ("embed", "reads"):
            out[name] = value @ forward
        elif kind == "writes":
            out[name] = forward.T @ value
        elif kind == "gain":
            out[name] = value[gain_perm] if gain_perm is not None else value
        else:
            out[name] = value
    return out


def permute_residual(tensors: Tensors, config: dict, *, rng: np.random.Generator, signs: bool = True) -> Disguised:
    """One permutation (and, with ``signs``, sign flips) of the residual basis everywhere.
    RMSNorm commutes with permutations, and a sign flip of a coordinate passes through
    ``gain * x / rms(x)`` unchanged in size, so gains are permuted but never negated."""
    width = Shape.of(config).hidden
    perm = rng.permutation(width)
    sign = rng.choice([-1.0, 1.0], size=width) if signs else np.ones(width)
    forward = np.zeros((width, width))
    forward[perm, np.arange(width)] = sign  # (x @ forward)[j] = sign[j] * x[perm[j]]
    out = _basis_change(tensors, forward, perm)
    return Disguised(out, dict(config), {"residual_permutation": perm.tolist(), "residual_signs": sign.astype(int).tolist()})


def fold_norms(tensors: Tensors, config: dict) -> Disguised:
    """Multiply every RMSNorm gain into the matrices that read the normalised stream and set
    the gains to one: the step that makes an orthogonal change of basis function-preserving.
    A tied head cannot absorb the final gain, so that case is refused unless the gain is one."""
    out = dict(tensors)
    s = Shape.of(config)
    readers = {
        "input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj", "block_sparse_moe.gate")
        + tuple(f"block_sparse_moe.experts.{e}.{w}" for e in range(s.experts) for w in ("w1", "w3")),
    }
    for layer, names in _layers(tensors).items():
        for norm, targets in readers.items():
            gain = tensors[names[f"{norm}.weight"]]
            for target in targets:
                if (name := names.get(f"{target}.weight")) is not None:
                    out[name] = tensors[name] * gain[None, :]
            out[names[f"{norm}.weight"]] = np.ones_like(gain)
    final = tensors["model.norm.weight"]
    if "lm_head.weight" in tensors:
        out["lm_head.weight"] = tensors["lm_head.weight"] * final[None, :]
    elif not np.all(final == 1):
        raise ValueError("disguise: a tied head cannot absorb the final norm gain")
    out["model.norm.weight"] = np.ones_like(final)
    return Disguised(out, dict(config), {"folded_norms": True})


def rotate_residual(tensors: Tensors, config: dict, *, rng: np.random.Generator) -> Disguised:
    """A Haar-random orthogonal change of the residual basis, SliceGPT style: gains folded
    into the next matrices first (RMSNorm with unit gain commutes with orthogonal maps, since
    ``rms(x Q) = rms(x)``), then the embedding and every reader take Q, every writer Q^T."""
    from scipy.stats import ortho_group

    width = Shape.of(config).hidden
    folded = fold_norms(tensors, config)
    rotation = ortho_group.rvs(width, random_state=rng)
    out = _basis_change(folded.tensors, rotation, None)
    return Disguised(out, dict(config), {"folded_norms": True, "rotation": rotation.tolist()})


def permute_units(tensors: Tensors, config: dict, *, rng: np.random.Generator, scale: bool = False) -> Disguised:
    """Per layer (and per expert) one permutation of the MLP hidden units: gate/up rows and
    down columns move together, so the sum over units is the same sum.  With ``scale``, each
    unit's up row is also multiplied by its own factor c = +-e**U(-1, 1) and its down column
    divided by it (SwiGLU is linear in up, so the unit's output is unchanged)."""
    out, record, factors = dict(tensors), [], []
    for layer, names in sorted(_layers(tensors).items()):
        triples = [("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")] if "mlp.up_proj.weight" in names else []
        experts = sorted({int(n.split(".")[2]) for n in names if n.startswith("block_sparse_moe.experts.")})
        triples += [tuple(f"block_sparse_moe.experts.{e}.{w}" for w in ("w1", "w3", "w2")) for e in experts]
        perms = []
        for gate, up, down in triples:
            g, u, d = (names[f"{p}.weight"] for p in (gate, up, down))
            width = tensors[u].shape[0]
            perm = rng.permutation(width)
            out[g], out[u], out[d] = tensors[g][perm], tensors[u][perm], tensors[d][:, perm]
            if scale:
                c = np.exp(rng.uniform(-1.0, 1.0, width)) * rng.choice([-1.0, 1.0], width)
                out[u], out[d] = out[u] * c[:, None], out[d] / c[None, :]
                factors.append(c.tolist())
            perms.append(perm.tolist())
        record.append(perms)
    return Disguised(out, dict(config), {"unit_permutations": record, **({"unit_factors": factors} if scale else {})})


def permute_heads(tensors: Tensors, config: dict, *, rng: np.random.Generator) -> Disguised:
    """Per layer: kv heads permuted, each query head moving with its kv group (HF repeat_kv
    pairs query head h with kv head h // group) and permuted within it; q/k/v rows (and
    biases) by head block, o columns by query-head block."""
    s = Shape.of(config)
    group = s.heads // s.kv_heads
    out, record = dict(tensors), []
    for layer, names in sorted(_layers(tensors).items()):
        kv = rng.permutation(s.kv_heads)
        q = np.concatenate([kv[j] * group + rng.permutation(group) for j in range(s.kv_heads)])
        q_rows = (q[:, None] * s.head_dim + np.arange(s.head_dim)).ravel()
        kv_rows = (kv[:, None] * s.head_dim + np.arange(s.head_dim)).ravel()
        for part, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            for suffix in ("weight", "bias"):
                if (name := names.get(f"self_attn.{part}.{suffix}")) is not None:
                    out[name] = tensors[name][rows]
        o = names["self_attn.o_proj.weight"]
        out[o] = tensors[o][:, q_rows]
        record.append({"q_heads": q.tolist(), "kv_heads": kv.tolist()})
    return Disguised(out, dict(config), {"head_permutations": record})


def transform_heads(tensors: Tensors, config: dict, *, rng: np.random.Generator) -> Disguised:
    """Per layer and kv head, an invertible map A inside the head's value space (v -> A v, and every
    query head of the group o_h -> o_h A^-1) and a rotation R that commutes with RoPE (one angle per
    rotate_half plane, dims i and i + head_dim/2) applied to k and to the group's q heads (q.k
    unchanged); biases, which live in head space, move with their rows."""
    s = Shape.of(config)
    group, dim, half = s.heads // s.kv_heads, s.head_dim, s.head_dim // 2
    out, record = dict(tensors), []
    for layer, names in sorted(_layers(tensors).items()):
        maps, angles = [], []
        for kv in range(s.kv_heads):
            value_map = rng.standard_normal((dim, dim)) / np.sqrt(dim) + np.eye(dim)
            angle = rng.uniform(0.0, 2 * np.pi, size=half)
            rotation = np.eye(dim)
            plane = np.arange(half)
            rotation[plane, plane] = rotation[plane + half, plane + half] = np.cos(angle)
            rotation[plane, plane + half], rotation[plane + half, plane] = -np.sin(angle), np.sin(angle)
            heads = [("k_proj", kv, rotation), ("v_proj", kv, value_map)] + [("q_proj", h, rotation) for h in range(kv * group, (kv + 1) * group)]
            for part, head, matrix in heads:
                rows = slice(head * dim, (head + 1) * dim)
                for suffix in ("weight", "bias"):
                    if (name := names.get(f"self_attn.{part}.{suffix}")) is not None:
                        out[name] = out[name].copy()
                        out[name][rows] = matrix @ tensors[name][rows]
            o = names["self_attn.o_proj.weight"]
            out[o] = out[o].copy()
            for head in range(kv * group, (kv + 1) * group):
                cols = slice(head * dim, (head + 1) * dim)
                out[o][:, cols] = tensors[o][:, cols] @ np.linalg.inv(value_map)
            maps.append(value_map.tolist())
            angles.append(angle.tolist())
        record.append({"value_maps": maps, "rope_angles": angles})
    return Disguised(out, dict(config), {"head_transforms": record})


def rescale(
    tensors: Tensors,
    config: dict,
    *,
    rng: np.random.Generator,
    log2_range: tuple[float, float] = (-2.0, 2.0),
    parts: Sequence[str] = ("qk", "vo", "updown"),
) -> Disguised:
    """Per layer, reciprocal factors drawn as 2**U(log2_range): q*c, k/c (RoPE is linear, so
    q.k is unchanged); v*c2, o/c2; up*c3, down/c3 (SwiGLU is linear in up).  Not
    function-preserving for models with q/k norms, which undo the scale of q and k."""
    unknown = set(parts) - {"qk", "vo", "updown"}
    if unknown:
        raise ValueError(f"disguise: unknown rescale parts {sorted(unknown)}")
    pairs = {"qk": (("self_attn.q_proj",), ("self_attn.k_proj",)), "vo": (("self_attn.v_proj",), ("self_attn.o_proj",))}
    out, record = dict(tensors), {p: [] for p in parts}
    lo, hi = log2_range
    for layer, names in sorted(_layers(tensors).items()):
        layer_pairs = dict(pairs)
        ups = [n[: -len(".w3.weight")] + ".w3" for n in names if n.endswith(".w3.weight")]
        layer_pairs["updown"] = (("mlp.up_proj", *ups), ("mlp.down_proj", *(u[:-1] + "2" for u in ups)))
        for part in parts:
            factor = float(2.0 ** rng.uniform(lo, hi))
            times, divided = layer_pairs[part]
            for prefixes, scale in ((times, factor), (divided, 1.0 / factor)):
                for prefix in prefixes:
                    for suffix in ("weight", "bias"):
                        if (name := names.get(f"{prefix}.{suffix}")) is not None:
                            out[name] = tensors[name] * scale
            record[part].append(factor)
    return Disguised(out, dict(config), {"rescale_factors": record})


def remap_layers(tensors: Tensors, config: dict, *, layer_map: Sequence[int], zero_output: Sequence[bool] = ()) -> Disguised:
    """New layer j is old layer ``layer_map[j]``; a layer with ``zero_output[j]`` has its o and
    down (w2) matrices zeroed, so it adds nothing to the residual stream (LLaMA-Pro style)."""
    old_depth = Shape.of(config).layers
    if any(not 0 <= i < old_depth for i in layer_map) or not layer_map:
        raise ValueError(f"disguise: layer map {list(layer_map)} outside 0..{old_depth - 1}")
    layers = _layers(tensors)
    out = {name: value for name, value in tensors.items() if not LAYER.match(name)}
    zero = list(zero_output) + [False] * (len(layer_map) - len(zero_output))
    for new, old in enumerate(layer_map):
        for rest, name in layers[old].items():
            value = tensors[name]
            if zero[new] and _kind(name) == "writes":
                value = np.zeros_like(value)
            out[f"model.layers.{new}.{rest}"] = value
    new_config = {**config, "num_hidden_layers": len(layer_map)}
    return Disguised(out, new_config, {"layer_map": list(map(int, layer_map)), "zero_output": [bool(z) for z in zero]})


def drop_layers(tensors: Tensors, config: dict, *, layers: Sequence[int]) -> Disguised:
    """Remove ``layers`` (old indices); the rest keep their order.  Changes the function."""
    keep = [i for i in range(Shape.of(config).layers) if i not in set(layers)]
    return remap_layers(tensors, config, layer_map=keep)


def duplicate_layers(tensors: Tensors, config: dict, *, layers: Sequence[int], zero_output: bool = False) -> Disguised:
    """Insert a copy of each of ``layers`` right after it.  With ``zero_output`` the copy writes
    nothing (function-preserving); without, it is depth up-scaling that needs healing."""
    layer_map, zero = [], []
    for i in range(Shape.of(config).layers):
        layer_map.append(i)
        zero.append(False)
        if i in set(layers):
            layer_map.append(i)
            zero.append(zero_output)
    return remap_layers(tensors, config, layer_map=layer_map, zero_output=zero)
