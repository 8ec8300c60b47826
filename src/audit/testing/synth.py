"""Synthetic checkpoints of every supported family, for tests and benchmarks.

Tensor names come from the same family specs that :func:`audit.roles.assign_roles`
reads, fused tensors are packed with the same :func:`split_ranges`, and every
value is drawn from a seeded generator, so a test can compare what the reader
returns with what was written.  Weights are i.i.d. normal (the
permutation-symmetric initialisation that the exact tests assume), norm gains
near one.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from audit.checkpoint.dtypes import DTYPES
from audit.roles.families import BUILTINS
from audit.roles.spec import AttentionShape, FamilySpec, Pattern, split_ranges

BIASED_FAMILIES = frozenset({"gpt2", "gpt-neox", "bert"})


@dataclass(frozen=True)
class Dims:
    """Architecture of a synthetic model."""

    layers: int = 2
    hidden: int = 32
    mlp: int = 64
    heads: int = 4
    kv_heads: int | None = None  # None: same as heads
    vocab: int = 50
    experts: int = 0
    shared_mlp: int = 0  # width of the shared expert, 0 for none
    dense_layers: tuple[int, ...] = ()  # MoE models: layers with a dense MLP instead of experts
    positions: int = 64

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def attention(self) -> AttentionShape:
        return AttentionShape(self.heads, self.kv_heads or self.heads, self.head_dim)


@dataclass
class Built:
    """What was written: the path and, per canonical slot, the float32 values."""

    path: Path
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: int = 0


def _shape(role: str, dims: Dims, width: int) -> tuple[int, ...]:
    q, kv = dims.heads * dims.head_dim, (dims.kv_heads or dims.heads) * dims.head_dim
    rows = {"attn.q": q, "attn.k": kv, "attn.v": kv, "attn.o": dims.hidden, "mlp.gate": width, "mlp.up": width,
            "mlp.down": dims.hidden, "gate": width, "up": width, "down": dims.hidden}
    cols = {"attn.o": q, "mlp.down": width, "down": width}
    base = role.removesuffix(".bias")
    if role.endswith(".bias"):
        return (rows.get(base, dims.hidden),)
    if base in rows:
        return (rows[base], cols.get(base, dims.hidden))
    special = {"attn.q_norm": (dims.head_dim,), "attn.k_norm": (dims.head_dim,), "moe.router": (dims.experts, dims.hidden),
               "moe.shared_router": (1, dims.hidden), "embed": (dims.vocab, dims.hidden), "head": (dims.vocab, dims.hidden),
               "embed.pos": (dims.positions, dims.hidden), "embed.type": (2, dims.hidden)}
    return special.get(role, (dims.hidden,))  # norms


def _wanted(pattern: Pattern, spec: FamilySpec, dims: Dims, layer: int, qk_norm: bool) -> bool:
    roles = set(pattern.roles)
    if pattern.kind == "ignore" or pattern.alternate:
        return False
    fused_roles = {r for p in spec.patterns if p.split for r in p.roles}
    if not pattern.split and roles & fused_roles:
        return False
    if any(r.endswith(".bias") for r in roles) and spec.family not in BIASED_FAMILIES:
        return False
    if roles & {"attn.q_norm", "attn.k_norm"} and not qk_norm:
        return False
    moe_layer = dims.experts > 0 and layer not in dims.dense_layers
    if roles & {"mlp.gate", "mlp.up", "mlp.down"} and moe_layer:
        return False
    if pattern.kind == "expert" or "moe.router" in roles:
        return moe_layer
    if pattern.kind == "shared_expert" or "moe.shared_router" in roles:
        return moe_layer and dims.shared_mlp > 0
    return True


def _config(spec: FamilySpec, dims: Dims) -> dict:
    kv = dims.kv_heads or dims.heads
    return {
        "architectures": [spec.architectures[0]],
        "model_type": spec.model_types[0],
        "hidden_size": dims.hidden, "n_embd": dims.hidden,
        "intermediate_size": dims.mlp, "moe_intermediate_size": dims.mlp,
        "num_hidden_layers": dims.layers, "n_layer": dims.layers,
        "num_attention_heads": dims.heads, "n_head": dims.heads,
        "num_key_value_heads": kv, "head_dim": dims.head_dim,
        "vocab_size": dims.vocab, "max_position_embeddings": dims.positions,
        **({"num_local_experts": dims.experts, "num_experts": dims.experts, "n_routed_experts": dims.experts}
           if dims.experts else {}),
        **({"shared_expert_intermediate_size": dims.shared_mlp} if dims.shared_mlp else {}),
        "torch_dtype": "float32",
    }


@dataclass(frozen=True)
class _Slot:
    """One stored tensor to generate: its name and the roles packed in it."""

    name: str
    pattern: Pattern
    layer: int | None
    expert: int | None
    shapes: tuple[tuple[int, ...], ...]

    @property
    def nbytes_f32(self) -> int:
        return 4 * sum(math.prod(shape) for shape in self.shapes)


HEAD_ROLES = frozenset({"head", "head.bias"})  # on the *ForCausalLM wrapper, outside the base model's prefix


def _plan(spec: FamilySpec, dims: Dims, qk_norm: bool) -> list[_Slot]:
    """Every tensor to write, under its Hugging Face name (``model.embed_tokens.weight`` but ``lm_head.weight``)."""
    base = spec.strip_prefixes[0] if spec.strip_prefixes else ""
    slots = []
    for pattern in spec.patterns:
        for layer in range(dims.layers) if pattern.placeholders else [None]:
            if not _wanted(pattern, spec, dims, layer if layer is not None else -1, qk_norm):
                continue
            width = dims.shared_mlp if pattern.kind == "shared_expert" else dims.mlp
            prefix = "" if HEAD_ROLES & set(pattern.roles) else base
            shapes = tuple(_shape(role, dims, width) for role in pattern.roles)
            for expert in range(dims.experts) if "expert" in pattern.placeholders else [None]:
                name = prefix + pattern.template.format(layer=layer, expert=expert)
                slots.append(_Slot(name, pattern, layer, expert, shapes))
    return sorted(slots, key=lambda slot: slot.name)


def _values(slot: _Slot, role: str, shape: tuple[int, ...], seed: int, std: float, perturb: tuple[int, float] | None) -> np.ndarray:
    """Seeded by (seed, tensor, role), so any subset of tensors can be generated in any order."""
    key = zlib.crc32(f"{slot.name}/{role}".encode())
    rng = np.random.default_rng([seed, key])
    norm_like = role.startswith("norm.") and not role.endswith(".bias") or role.endswith("_norm")
    scale = 0.1 if norm_like else std
    values = rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
    if perturb is not None:  # a "derived" copy: the same draw plus independent noise
        noise_seed, relative = perturb
        values += np.random.default_rng([noise_seed, key]).standard_normal(shape, dtype=np.float32) * np.float32(scale * relative)
    return values + np.float32(1.0) if norm_like else values


def make_checkpoint(
    path: str | Path,
    family: str = "llama",
    dims: Dims = Dims(),
    dtype: str = "F32",
    seed: int = 0,
    shards: int = 1,
    qk_norm: bool = False,
    std: float = 0.02,
    config: bool = True,
    shard_bytes: int | None = None,
    keep_reference: bool = True,
    perturb: tuple[int, float] | None = None,
    tokenizer: bool = False,
) -> Built:
    """Write a random checkpoint of ``family`` to directory ``path``.

    ``shards`` splits the tensors into that many files, or ``shard_bytes``
    caps each file (as real releases do); only one shard is in memory at a
    time.  ``perturb=(seed, relative)`` adds independent noise of that
    relative size to every value: a cheap stand-in for a fine-tuned copy.
    ``tokenizer`` writes a ``tokenizer.json`` naming the ``dims.vocab`` tokens.
    """
    spec = BUILTINS[family]
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    built = Built(directory)
    itemsize = DTYPES[dtype].itemsize
    groups = _shard_groups(_plan(spec, dims, qk_norm), shards, shard_bytes, itemsize)
    weight_map: dict[str, str] = {}
    for number, group in enumerate(groups, start=1):
        tensors = {}
        for slot in group:
            parts = [_values(slot, role, shape, seed, std, perturb) for role, shape in zip(slot.pattern.roles, slot.shapes)]
            if keep_reference:
                for role, values in zip(slot.pattern.roles, parts):
                    built.reference[_reference_key(slot, role)] = values
            canonical = parts[0] if not slot.pattern.split else _fuse(slot.pattern, parts, dims)
            transpose = spec.layer_layout == "in_out" and slot.pattern.kind != "global" and canonical.ndim == 2
            tensors[slot.name] = np.ascontiguousarray(canonical.T if transpose else canonical).astype(DTYPES[dtype])
            built.parameters += canonical.size
        shard = "model.safetensors" if len(groups) == 1 else f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        save_file(tensors, directory / shard, metadata={"format": "pt"})
        weight_map |= {name: shard for name in tensors}
    if len(groups) > 1:
        index = {"metadata": {"total_size": built.parameters * itemsize}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if config:
        (directory / "config.json").write_text(json.dumps(_config(spec, dims), indent=2))
    if tokenizer:
        vocab = {f"tok{i}": i for i in range(dims.vocab)}
        (directory / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": vocab}}))
    return built


def _reference_key(slot: _Slot, role: str) -> str:
    kind = slot.pattern.kind
    if kind == "global":
        return f"global.{role}"
    if kind == "expert":
        return f"experts.{slot.layer}.{slot.expert}.{role}"
    return f"{'layers' if kind == 'layer' else 'shared'}.{slot.layer}.{role}"


def _shard_groups(slots: list[_Slot], shards: int, shard_bytes: int | None, itemsize: int) -> list[list[_Slot]]:
    if shard_bytes is None:
        per_shard = math.ceil(len(slots) / max(1, shards))
        return [slots[i : i + per_shard] for i in range(0, len(slots), per_shard)]
    groups: list[list[_Slot]] = [[]]
    size = 0
    for slot in slots:
        nbytes = slot.nbytes_f32 // 4 * itemsize
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(slot)
        size += nbytes
    return groups


def _fuse(pattern: Pattern, parts: list[np.ndarray], dims: Dims) -> np.ndarray:
    rows = sum(p.shape[0] for p in parts)
    fused = np.empty((rows, *parts[0].shape[1:]), dtype=np.float32)
    for part, ranges in zip(parts, split_ranges(pattern.split, rows, dims.attention, pattern.template)):
        offset = 0
        for start, stop in ranges:
            fused[start:stop] = part[offset : offset + stop - start]
            offset += stop - start
    return fused
