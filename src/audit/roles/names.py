"""The canonical role vocabulary shared by every family and user mapping.

Per-layer roles name the matrices (canonical ``[out, in]``) and vectors of one
transformer block; expert roles name one MoE expert's MLP; global roles are
the embeddings, the final norm and the output head.
"""

from __future__ import annotations

_WITH_BIAS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down", "norm.attn", "norm.mlp")

LAYER_ROLES: frozenset[str] = frozenset(
    [*_WITH_BIAS, *(f"{r}.bias" for r in _WITH_BIAS), "attn.q_norm", "attn.k_norm", "moe.router", "moe.shared_router"]
)
EXPERT_ROLES: frozenset[str] = frozenset(["gate", "up", "down", "gate.bias", "up.bias", "down.bias"])
GLOBAL_ROLES: frozenset[str] = frozenset(
    ["embed", "embed.pos", "embed.type", "norm.embed", "norm.embed.bias", "norm.final", "norm.final.bias", "head", "head.bias"]
)

ATTENTION = ("attn.q", "attn.k", "attn.v", "attn.o")
MLP = ("mlp.gate", "mlp.up", "mlp.down")
EXPERT_MLP = ("gate", "up", "down")

# Display order for reports and `inspect`.
LAYER_ORDER: tuple[str, ...] = (
    *ATTENTION,
    *(f"{r}.bias" for r in ATTENTION),
    "attn.q_norm",
    "attn.k_norm",
    *MLP,
    *(f"{r}.bias" for r in MLP),
    "norm.attn",
    "norm.attn.bias",
    "norm.mlp",
    "norm.mlp.bias",
    "moe.router",
    "moe.shared_router",
)
assert set(LAYER_ORDER) == LAYER_ROLES
