"""Assigning canonical roles to the tensors of a checkpoint."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from audit.checkpoint import Checkpoint, TensorView
from audit.errors import InputError, shown
from audit.roles.families import BUILTINS
from audit.roles.shapes import check_rank, check_widths, expected_rank
from audit.roles.spec import AttentionShape, FamilySpec, Pattern, split_ranges


@dataclass(frozen=True)
class Layer:
    """One transformer block: its roles, its MoE experts and shared expert."""

    index: int
    roles: Mapping[str, TensorView]
    experts: tuple[Mapping[str, TensorView], ...] = ()
    shared_expert: Mapping[str, TensorView] = field(default_factory=dict)

    def get(self, role: str) -> TensorView | None:
        return self.roles.get(role)

    def __getitem__(self, role: str) -> TensorView:
        return self.roles[role]


@dataclass(frozen=True)
class RoleMap:
    """Canonical roles of a whole model."""

    family: str
    detected_by: str  # "mapping", "config" or "names"
    model_type: str | None
    attention: AttentionShape
    layers: tuple[Layer, ...]
    globals: Mapping[str, TensorView]
    ignored: tuple[str, ...]
    unassigned: tuple[str, ...]

    @property
    def depth(self) -> int:
        return len(self.layers)

    def has(self, role: str) -> bool:
        """True when every layer has ``role``."""
        return bool(self.layers) and all(role in layer.roles for layer in self.layers)

    def views(self, role: str) -> list[TensorView]:
        """``role`` in every layer, in depth order; :class:`InputError` if any lacks it."""
        missing = [layer.index for layer in self.layers if role not in layer.roles]
        if missing or not self.layers:
            raise InputError(f"role '{role}' missing in layer(s) {missing or 'all'} of this {self.family} model")
        return [layer.roles[role] for layer in self.layers]


class _Matcher:
    """All templates of a spec compiled into one alternation regex."""

    def __init__(self, spec: FamilySpec) -> None:
        self.spec = spec
        parts, self.slots = [], []
        for i, pattern in enumerate(spec.patterns):
            parts.append(f"(?P<t{i}>{pattern.regex})")
            self.slots.append(pattern)
        self.regex = re.compile("|".join(parts))
        # Group numbers of each template's placeholders, in template order.
        self.groups: list[list[int]] = []
        for i, pattern in enumerate(self.slots):
            start = self.regex.groupindex[f"t{i}"]
            self.groups.append([start + 1 + k for k in range(len(pattern.placeholders))])

    def match(self, name: str) -> tuple[Pattern, dict[str, int]] | None:
        found = self.regex.fullmatch(self.spec.strip(name))
        if found is None:
            return None
        index = int(found.lastgroup[1:])
        pattern = self.slots[index]
        digits = [found.group(g) for g in self.groups[index]]
        if any(len(d) > 9 for d in digits):  # no model has a billion layers; int() of 10^7 digits would hang
            raise InputError(f"tensor '{shown(name)}': a layer or expert number of {max(map(len, digits)):,} digits")
        return pattern, dict(zip(pattern.placeholders, map(int, digits)))


def _spec_for(checkpoint: Checkpoint, mapping: FamilySpec | Path | str | None) -> tuple[FamilySpec, str]:
    if mapping is not None:
        spec = mapping if isinstance(mapping, FamilySpec) else FamilySpec.from_file(Path(mapping), BUILTINS)
        return spec, "mapping"
    config = checkpoint.config or {}
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    for spec in BUILTINS.values():
        if any(a in spec.architectures for a in architectures) or model_type in spec.model_types:
            if _count_matches(spec, checkpoint):
                return spec, "config"
            checkpoint.warnings.append(
                f"config.json says {model_type or architectures} but no tensor matches the {spec.family} names; "
                "detecting the family from tensor names instead"
            )
            break
    scores = [(_count_matches(spec, checkpoint), -order, spec) for order, spec in enumerate(BUILTINS.values())]
    best, _, spec = max(scores, key=lambda s: s[:2])
    if best == 0:
        sample = next(iter(checkpoint.tensors))
        raise InputError(
            f"{checkpoint.path}: unrecognised architecture (no known tensor names, e.g. '{shown(sample)}'); "
            "supply a role mapping with --mapping FILE"
        )
    return spec, "names"


def _count_matches(spec: FamilySpec, checkpoint: Checkpoint) -> int:
    matcher = _Matcher(spec)
    return sum(1 for name in checkpoint.tensors if (m := matcher.match(name)) and m[0].kind != "ignore")


def assign_roles(checkpoint: Checkpoint, mapping: FamilySpec | Path | str | None = None) -> RoleMap:
    """Map every tensor of ``checkpoint`` to its canonical role.

    ``mapping`` is a :class:`FamilySpec` or a JSON mapping file for
    architectures the built-in families do not cover.
    """
    spec, detected_by = _spec_for(checkpoint, mapping)
    attention = AttentionShape.from_config(checkpoint.config)
    matcher = _Matcher(spec)
    layer_roles: dict[int, dict[str, TensorView]] = defaultdict(dict)
    experts: dict[int, dict[int, dict[str, TensorView]]] = defaultdict(lambda: defaultdict(dict))
    shared: dict[int, dict[str, TensorView]] = defaultdict(dict)
    globals_: dict[str, TensorView] = {}
    ignored, unassigned = [], []

    for name, stored in checkpoint.tensors.items():
        found = matcher.match(name)
        if found is None:
            unassigned.append(name)
            continue
        pattern, where = found
        if pattern.kind == "ignore":
            ignored.append(name)
            continue
        if max(where.values(), default=0) >= len(checkpoint.tensors):  # before any per-layer allocation
            raise InputError(f"tensor '{shown(name)}': layer or expert number {max(where.values())} is not below the "
                             f"tensor count {len(checkpoint.tensors)} (layers and experts are numbered 0..N-1)")
        for role in pattern.roles:
            check_rank(name, stored.shape, expected_rank(pattern.kind, role), role)
        transposed = spec.layer_layout == "in_out" and pattern.kind != "global" and len(stored.shape) == 2
        base = TensorView(stored, transposed=transposed)
        if pattern.split:
            ranges = split_ranges(pattern.split, base.shape[0], attention, name)
            views = [TensorView(stored, transposed, r, part) for r, part in zip(ranges, pattern.roles)]
        else:
            views = [base]
        if pattern.kind == "global":
            target = globals_
        elif pattern.kind == "expert":
            target = experts[where["layer"]][where["expert"]]
        else:
            target = (layer_roles if pattern.kind == "layer" else shared)[where["layer"]]
        for role, view in zip(pattern.roles, views):
            if role in target:
                raise InputError(f"tensors '{shown(target[role].name)}' and '{shown(view.name)}' both map to role '{role}'")
            target[role] = view

    indices = sorted(set(layer_roles) | set(experts) | set(shared))
    missing = sorted(set(range(indices[-1] + 1)) - set(indices)) if indices else []
    if missing:
        raise InputError(f"{checkpoint.path}: {len(missing)} layer(s) have no recognised tensors, e.g. {shown(missing[:5], 60)} "
                         "(layers must be numbered 0..N-1)")
    layers = []
    for i in indices:
        expert_ids = sorted(experts.get(i, {}))
        if expert_ids and expert_ids != list(range(len(expert_ids))):
            raise InputError(f"{checkpoint.path}: layer {i} experts are not numbered 0..{len(expert_ids) - 1}")
        layers.append(
            Layer(
                index=i,
                roles=MappingProxyType(layer_roles.get(i, {})),
                experts=tuple(MappingProxyType(experts[i][e]) for e in expert_ids),
                shared_expert=MappingProxyType(shared.get(i, {})),
            )
        )
    check_widths([(l.index, l.roles, (*l.experts, l.shared_expert)) for l in layers], globals_)
    config = checkpoint.config or {}
    return RoleMap(
        family=spec.family,
        detected_by=detected_by,
        model_type=config.get("model_type"),
        attention=attention,
        layers=tuple(layers),
        globals=MappingProxyType(globals_),
        ignored=tuple(ignored),
        unassigned=tuple(unassigned),
    )
