"""Shape checks of role tensors: the right byte count is not enough.

A tensor can hold exactly the bytes its header claims and still not be what
its role needs: a query projection stored flat or as three axes, a norm gain
stored as a matrix, a down-projection stored transposed.  The methods would
then fail deep inside numpy, or, worse, compute on a reinterpreted matrix.
These checks run once, when roles are assigned, and refuse with one line
naming the tensor and the shape its role needs.

Canonical layout is ``[out, in]`` (after the family's ``in_out`` transpose).
The residual width (``hidden``) is the same in every block of a transformer:
every matrix reading the residual stream has ``in == hidden``, every matrix
writing it has ``out == hidden``, and every vector on it has ``hidden``
entries.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from audit.checkpoint import TensorView
from audit.errors import InputError, shown

LAYER_MATRICES = frozenset({"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down",
                            "moe.router", "moe.shared_router"})
EXPERT_MATRICES = frozenset({"gate", "up", "down"})
GLOBAL_MATRICES = frozenset({"embed", "embed.pos", "embed.type", "head"})

READS_RESIDUAL = frozenset({"attn.q", "attn.k", "attn.v", "mlp.gate", "mlp.up", "moe.router", "moe.shared_router",
                            "gate", "up", "embed", "embed.pos", "embed.type", "head"})  # in (axis 1) == hidden
WRITES_RESIDUAL = frozenset({"attn.o", "mlp.down", "down"})  # out (axis 0) == hidden
ON_RESIDUAL = frozenset({"norm.attn", "norm.attn.bias", "norm.mlp", "norm.mlp.bias", "attn.o.bias", "mlp.down.bias",
                         "down.bias", "norm.final", "norm.final.bias", "norm.embed", "norm.embed.bias"})


def expected_rank(kind: str, role: str) -> int:
    """2 for a matrix role, 1 for a vector role (norm gains, biases, q/k norms)."""
    matrices = {"global": GLOBAL_MATRICES, "expert": EXPERT_MATRICES, "shared_expert": EXPERT_MATRICES}.get(kind, LAYER_MATRICES)
    return 2 if role in matrices else 1


def check_rank(name: str, shape: Sequence[int], rank: int, role: str) -> None:
    """Refuse a tensor whose rank is not its role's (checked before any split or transpose)."""
    if len(shape) != rank or 0 in shape:
        layout = "[out, in]" if rank == 2 else "[width]"
        raise InputError(f"tensor '{shown(name)}' has shape {list(shape)}, but role '{role}' needs a non-empty "
                         f"{'matrix' if rank == 2 else 'vector'} {layout}")


def check_widths(layers: Sequence[tuple[int, Mapping[str, TensorView], Sequence[Mapping[str, TensorView]]]],
                 globals_: Mapping[str, TensorView]) -> None:
    """Every role agrees on the residual width, and each MLP's matrices on its hidden width.

    ``layers`` is (index, roles, experts and shared expert) per block.
    """
    hidden = _residual_width(layers, globals_)
    if hidden is None:
        return
    groups = [(f"layer {i}", roles) for i, roles, _ in layers]
    groups += [(f"layer {i} expert {e}", expert) for i, _, experts in layers for e, expert in enumerate(experts)]
    groups += [("global", globals_)]
    for where, roles in groups:
        for role, view in roles.items():
            axis = 1 if role in READS_RESIDUAL else 0 if role in WRITES_RESIDUAL | ON_RESIDUAL else None
            if axis is not None and view.shape[axis] != hidden:
                _refuse(view, role, where, f"{'in' if axis else 'out'} = the hidden width {hidden}")
        _check_pair(roles, "attn.k", "attn.v", where, same=True)
        _check_pair(roles, "attn.q", "attn.o", where, same=False)
        for gate, up, down in (("mlp.gate", "mlp.up", "mlp.down"), ("gate", "up", "down")):
            _check_pair(roles, gate, up, where, same=True)
            _check_pair(roles, up, down, where, same=False)


def _residual_width(layers, globals_: Mapping[str, TensorView]) -> int | None:
    for _, roles, _ in layers:
        for role in ("attn.q", "mlp.up", "attn.o", "norm.attn"):
            if role in roles:
                view = roles[role]
                return view.shape[1] if role in READS_RESIDUAL else view.shape[0]
    embed = globals_.get("embed")
    return embed.shape[1] if embed is not None else None


def _check_pair(roles: Mapping[str, TensorView], first: str, second: str, where: str, *, same: bool) -> None:
    """``same``: both have one shape (k and v; gate and up).  Else ``second`` reads what ``first`` writes."""
    a, b = roles.get(first), roles.get(second)
    if a is None or b is None:
        return
    if same and a.shape != b.shape:
        _refuse(b, second, where, f"the shape {list(a.shape)} of its '{first}'")
    if not same and b.shape[1] != a.shape[0]:
        _refuse(b, second, where, f"in = {a.shape[0]}, the out width of its '{first}'")


def _refuse(view: TensorView, role: str, where: str, needed: str) -> None:
    raise InputError(f"tensor '{shown(view.name)}' ({where}, role '{role}') has shape {list(view.shape)} "
                     f"as [out, in]; its role needs {needed}")
