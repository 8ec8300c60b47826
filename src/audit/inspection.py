"""A structural summary of a checkpoint: what `audit inspect` shows.

Widths and depths are read from the tensors themselves (config.json can lie or
be missing); head counts come from config.json because they cannot be read
off the weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from audit.checkpoint import Checkpoint
from audit.checkpoint.hub import hub_record
from audit.checkpoint.dtypes import is_float
from audit.roles import RoleMap
from audit.roles.names import LAYER_ORDER


@dataclass(frozen=True)
class FileSummary:
    path: str
    role: str
    bytes: int
    sha256: str | None
    resolved: str  # the absolute path read, symlinks resolved (a Hub cache snapshot links into blobs/)


@dataclass(frozen=True)
class ModelSummary:
    path: str
    family: str
    detected_by: str
    model_type: str | None
    depth: int
    hidden: int | None
    mlp_width: int | None
    vocab: int | None
    heads: int | None
    kv_heads: int | None
    head_dim: int | None
    moe_layers: int
    experts: int
    expert_mlp_width: int | None
    shared_expert_width: int | None
    parameters: int
    other_elements: int
    tensors: int
    dtypes: dict[str, int]
    layer_roles: list[str]
    partial_roles: dict[str, list[int]]
    expert_roles: list[str]
    shared_expert_roles: list[str]
    global_roles: list[str]
    ignored: list[str]
    unassigned: list[str]
    files: list[FileSummary]
    warnings: list[str] = field(default_factory=list)
    tokenizer: dict | None = None  # where the vocabulary came from (kind, path, size)
    hub: dict | None = None  # repository, commit and blob checks when opened by Hugging Face id
    gguf: dict | None = None  # GGUF architecture and storage (quantisation) types of the tensors


ARCHITECTURE = ("family", "model_type", "depth", "hidden", "mlp_width", "vocab", "heads", "kv_heads", "experts",
                "parameters", "dtypes")


def architecture(summary: ModelSummary) -> dict[str, Any]:
    """The fields of ``summary`` that describe an architecture (baseline members, the report's inputs)."""
    return {key: getattr(summary, key) for key in ARCHITECTURE}


def _first_shape(roles: RoleMap, role: str, axis: int) -> int | None:
    for layer in roles.layers:
        if role in layer.roles:
            return layer.roles[role].shape[axis]
    return None


def _first_expert_width(roles: RoleMap, shared: bool) -> int | None:
    for layer in roles.layers:
        group = [layer.shared_expert] if shared else layer.experts
        for expert in group:
            if "up" in expert:
                return expert["up"].shape[0]
    return None


def summarize(checkpoint: Checkpoint, roles: RoleMap, hashes: bool = True, check_finite: bool = False,
              tokenizer: bool = True) -> ModelSummary:
    """Summarise ``checkpoint``; ``check_finite`` scans every float tensor for NaN/Inf; without ``tokenizer``
    the tokenizer is not read (its summary is left out)."""
    if hashes:
        checkpoint.start_hashing()  # on background threads while the tensors are scanned
    if check_finite:
        for stored in checkpoint.tensors.values():
            if is_float(stored.dtype):
                stored.view().check_finite()
    present = Counter(role for layer in roles.layers for role in layer.roles)
    everywhere = [r for r in LAYER_ORDER if present[r] == roles.depth]
    partial = {r: [l.index for l in roles.layers if r in l.roles] for r in LAYER_ORDER if 0 < present[r] < roles.depth}
    embed = roles.globals.get("embed")
    hidden = embed.shape[1] if embed is not None else _first_shape(roles, "attn.q", 1)
    floats = [t for t in checkpoint.tensors.values() if is_float(t.dtype)]
    digests = checkpoint.file_hashes() if hashes else {}
    files = [FileSummary(name, f.role, f.size, digests.get(name), str(f.resolved))
             for f in checkpoint.files for name in [str(f.path.relative_to(checkpoint.directory))]]
    return ModelSummary(
        path=str(checkpoint.path),
        family=roles.family,
        detected_by=roles.detected_by,
        model_type=roles.model_type,
        depth=roles.depth,
        hidden=hidden,
        mlp_width=_first_shape(roles, "mlp.up", 0),
        vocab=embed.shape[0] if embed is not None else None,
        heads=roles.attention.heads,
        kv_heads=roles.attention.kv_heads,
        head_dim=roles.attention.head_dim,
        moe_layers=sum(1 for layer in roles.layers if layer.experts),
        experts=max((len(layer.experts) for layer in roles.layers), default=0),
        expert_mlp_width=_first_expert_width(roles, shared=False),
        shared_expert_width=_first_expert_width(roles, shared=True),
        parameters=sum(t.numel for t in floats),
        other_elements=sum(t.numel for t in checkpoint.tensors.values() if not is_float(t.dtype)),
        tensors=len(checkpoint.tensors),
        dtypes=dict(sorted(Counter(t.dtype for t in checkpoint.tensors.values()).items())),
        layer_roles=everywhere,
        partial_roles=partial,
        expert_roles=sorted({r for layer in roles.layers for e in layer.experts for r in e}),
        shared_expert_roles=sorted({r for layer in roles.layers for r in layer.shared_expert}),
        global_roles=sorted(roles.globals),
        ignored=list(roles.ignored),
        unassigned=list(roles.unassigned),
        files=files,
        warnings=list(checkpoint.warnings),
        tokenizer=checkpoint.vocabulary.summary() if tokenizer and checkpoint.vocabulary is not None else None,
        gguf=None if checkpoint.gguf is None else {
            "architecture": checkpoint.gguf.architecture,
            "tensor_types": dict(sorted(Counter(checkpoint.gguf_tensor_types.values()).items()))},
        hub=hub_record(checkpoint.source, {f.path: f.sha256 for f in files}) if checkpoint.source is not None else None,
    )
