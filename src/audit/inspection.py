"""A structural summary of a checkpoint: what `audit inspect` shows.

Widths and depths are read from the tensors themselves (config.json can lie or
be missing); head counts come from config.json because they cannot be read
off the weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from audit.checkpoint import Checkpoint
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

    def to_dict(self) -> dict:
        return asdict(self)


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


def summarize(checkpoint: Checkpoint, roles: RoleMap, hashes: bool = True, check_finite: bool = False) -> ModelSummary:
    """Summarise ``checkpoint``; ``check_finite`` scans every float tensor for NaN/Inf."""
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
        files=[
            FileSummary(str(f.path.relative_to(checkpoint.directory)), f.role, f.size, f.sha256 if hashes else None,
                        str(f.resolved))
            for f in checkpoint.files
        ],
        warnings=list(checkpoint.warnings),
    )


def format_summary(summary: ModelSummary) -> str:
    """Human-readable text for the terminal."""

    def known(value: object) -> str:
        return "unknown (no config.json)" if value is None else str(value)

    lines = [
        f"checkpoint   {summary.path}",
        f"family       {summary.family} (detected from {summary.detected_by}"
        + (f"; model_type {summary.model_type})" if summary.model_type else ")"),
        f"depth        {summary.depth} layers",
        f"hidden       {summary.hidden}",
        f"MLP width    {summary.mlp_width if summary.mlp_width is not None else '-'}",
        f"vocabulary   {summary.vocab if summary.vocab is not None else '-'}",
        f"heads        {known(summary.heads)} (kv heads {known(summary.kv_heads)}, head dim {known(summary.head_dim)})",
    ]
    if summary.experts:
        lines.append(
            f"experts      {summary.experts} per MoE layer in {summary.moe_layers} layer(s), width {summary.expert_mlp_width}"
            + (f"; shared expert width {summary.shared_expert_width}" if summary.shared_expert_width else "")
        )
    lines += [
        f"parameters   {summary.parameters:,} in {summary.tensors} tensors"
        + (f" (+{summary.other_elements:,} non-float buffer elements)" if summary.other_elements else ""),
        "dtypes       " + ", ".join(f"{d} x{n}" for d, n in summary.dtypes.items()),
        "layer roles  " + " ".join(summary.layer_roles),
    ]
    grouped: dict[tuple[int, ...], list[str]] = {}
    for role, layers in summary.partial_roles.items():
        grouped.setdefault(tuple(layers), []).append(role)
    lines += [f"  only in layers {list(layers)}: {' '.join(names)}" for layers, names in grouped.items()]
    if summary.expert_roles:
        lines.append("expert roles " + " ".join(summary.expert_roles))
    if summary.shared_expert_roles:
        lines.append("shared roles " + " ".join(summary.shared_expert_roles))
    lines.append("global roles " + " ".join(summary.global_roles))
    if summary.ignored:
        lines.append(f"ignored      {len(summary.ignored)} buffer tensor(s)")
    if summary.unassigned:
        lines.append(f"unassigned   {len(summary.unassigned)}: " + ", ".join(summary.unassigned[:5]) + (" ..." if len(summary.unassigned) > 5 else ""))
    lines.append("files")
    lines += [f"  {f.path}  {f.role}  {f.bytes:,} bytes  sha256 {f.sha256 or '(not computed)'}" for f in summary.files]
    lines += [f"warning: {w}" for w in summary.warnings]
    return "\n".join(lines)
