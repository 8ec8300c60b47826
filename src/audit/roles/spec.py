"""Family specifications: how tensor names map to canonical roles.

A spec is plain data (the same schema for built-in families and for a user's
mapping file), so supporting a new architecture means writing a mapping, not
code::

    {
      "family": "my-arch",
      "extends": "llama",                      # optional: start from a built-in
      "architectures": ["MyForCausalLM"], "model_types": ["my"],
      "strip_prefixes": ["model."],
      "layer_layout": "out_in",                # or "in_out" (GPT-2 Conv1D)
      "global": {"embed": "tok.weight"},
      "layer": {"attn.q": "blocks.{layer}.wq.weight", "mlp.up": ["alt1.{layer}", "alt2.{layer}"]},
      "expert": {"up": "blocks.{layer}.moe.{expert}.w_in.weight"},
      "shared_expert": {"up": "blocks.{layer}.shared.w_in.weight"},
      "fused": {"blocks.{layer}.wqkv.weight": {"split": "qkv", "into": ["attn.q", "attn.k", "attn.v"]}},
      "ignore": ["blocks.{layer}.attn.mask"]
    }

Fused splits: ``qkv`` (q, k, v concatenated; sizes from the head counts, so
grouped-query attention works), ``qkv-per-head`` (GPT-NeoX: per head, q k v
interleaved), ``halves`` (gate and up concatenated, Phi-3).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from audit.errors import InputError
from audit.roles.names import EXPERT_ROLES, GLOBAL_ROLES, LAYER_ROLES

SPLITS = ("qkv", "qkv-per-head", "halves")
_KINDS = {"global": GLOBAL_ROLES, "layer": LAYER_ROLES, "expert": EXPERT_ROLES, "shared_expert": EXPERT_ROLES}


@dataclass(frozen=True)
class AttentionShape:
    """Head counts from config.json; ``None`` where the config does not say."""

    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None

    @classmethod
    def from_config(cls, config: dict | None) -> AttentionShape:
        if not config:
            return cls()
        config = config.get("text_config", config) if "text_config" in config else config
        heads = _first_int(config, "num_attention_heads", "n_head", "num_heads")
        kv_heads = _first_int(config, "num_key_value_heads", "num_kv_heads", "multi_query_group_num") or heads
        hidden = _first_int(config, "hidden_size", "n_embd", "d_model")
        head_dim = _first_int(config, "head_dim") or (hidden // heads if hidden and heads else None)
        return cls(heads, kv_heads, head_dim)


def _first_int(config: dict, *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def split_ranges(split: str, rows: int, attention: AttentionShape, tensor: str) -> list[tuple[tuple[int, int], ...]]:
    """Row ranges of each part of a fused tensor with ``rows`` output rows.

    The same function serves reading (views) and writing (synthetic
    checkpoints), so the two cannot disagree.
    """
    if split == "halves":
        if rows % 2:
            raise InputError(f"fused tensor '{tensor}' has {rows} rows, not divisible into two halves")
        return [((0, rows // 2),), ((rows // 2, rows),)]
    if split == "qkv":
        heads, kv_heads, head_dim = attention.heads, attention.kv_heads, attention.head_dim
        if heads and kv_heads and head_dim and (heads + 2 * kv_heads) * head_dim == rows:
            q, kv = heads * head_dim, kv_heads * head_dim
        elif heads and kv_heads and head_dim:
            raise InputError(
                f"fused tensor '{tensor}' has {rows} rows but config.json implies "
                f"({heads} + 2 x {kv_heads}) heads x {head_dim} = {(heads + 2 * kv_heads) * head_dim}"
            )
        elif rows % 3 == 0:
            q = kv = rows // 3
        else:
            raise InputError(f"fused tensor '{tensor}' has {rows} rows; head counts in config.json are needed to split it")
        return [((0, q),), ((q, q + kv),), ((q + kv, rows),)]
    if split == "qkv-per-head":
        heads = attention.heads
        if not heads:
            raise InputError(f"fused tensor '{tensor}' interleaves heads; config.json must give num_attention_heads")
        if rows % (3 * heads):
            raise InputError(f"fused tensor '{tensor}' has {rows} rows, not 3 x {heads} heads")
        dim = rows // (3 * heads)
        return [tuple((h * 3 * dim + p * dim, h * 3 * dim + (p + 1) * dim) for h in range(heads)) for p in range(3)]
    raise InputError(f"unknown fused split '{split}' (known: {', '.join(SPLITS)})")


@dataclass(frozen=True)
class Pattern:
    """One name template: which kind of slot it fills and with which role(s)."""

    kind: str  # global, layer, expert, shared_expert, ignore
    template: str
    roles: tuple[str, ...]
    split: str | None = None
    alternate: bool = False  # a second name for the same slot (e.g. TF's LayerNorm gamma)

    @property
    def regex(self) -> str:
        escaped = re.escape(self.template)
        return escaped.replace(r"\{layer\}", r"(\d+)").replace(r"\{expert\}", r"(\d+)")

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(layer|expert)\}", self.template))


@dataclass(frozen=True)
class FamilySpec:
    family: str
    patterns: tuple[Pattern, ...]
    architectures: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    strip_prefixes: tuple[str, ...] = ()
    layer_layout: str = "out_in"
    source: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict, builtins: dict[str, FamilySpec] | None = None) -> FamilySpec:
        """Parse and validate a spec; ``extends`` starts from a built-in one."""
        if not isinstance(data, dict) or not isinstance(data.get("family"), str):
            raise InputError("mapping must be a JSON object with a string 'family'")
        if "extends" in data:
            base = (builtins or {}).get(data["extends"])
            if base is None:
                raise InputError(f"mapping extends unknown family '{data['extends']}' (known: {', '.join(builtins or {})})")
            data = _merge(base.source, {k: v for k, v in data.items() if k != "extends"})
        unknown = set(data) - {"family", "architectures", "model_types", "strip_prefixes", "layer_layout", "fused", "ignore", *_KINDS}
        if unknown:
            raise InputError(f"mapping '{data['family']}': unknown key(s) {sorted(unknown)}")
        if data.get("layer_layout", "out_in") not in ("out_in", "in_out"):
            raise InputError(f"mapping '{data['family']}': layer_layout must be 'out_in' or 'in_out'")
        patterns: list[Pattern] = []
        for kind, allowed in _KINDS.items():
            for role, templates in (data.get(kind) or {}).items():
                if role not in allowed:
                    raise InputError(f"mapping '{data['family']}': '{role}' is not a {kind} role (known: {sorted(allowed)})")
                for n, template in enumerate([templates] if isinstance(templates, str) else templates):
                    patterns.append(_checked(Pattern(kind, template, (role,), alternate=n > 0), data["family"]))
        for template, fused in (data.get("fused") or {}).items():
            into = tuple(fused.get("into", ()))
            if fused.get("split") not in SPLITS or len(into) != (2 if fused.get("split") == "halves" else 3):
                raise InputError(f"mapping '{data['family']}': fused '{template}' needs split in {SPLITS} and matching 'into'")
            bad = [r for r in into if r not in LAYER_ROLES]
            if bad:
                raise InputError(f"mapping '{data['family']}': fused roles {bad} are not layer roles")
            patterns.append(_checked(Pattern("layer", template, into, fused["split"]), data["family"]))
        patterns += [_checked(Pattern("ignore", t, ()), data["family"]) for t in data.get("ignore") or ()]
        if not any(p.kind in ("layer", "global") for p in patterns):
            raise InputError(f"mapping '{data['family']}' maps no layer or global roles")
        return cls(
            family=data["family"],
            patterns=tuple(patterns),
            architectures=tuple(data.get("architectures") or ()),
            model_types=tuple(data.get("model_types") or ()),
            strip_prefixes=tuple(data.get("strip_prefixes") or ()),
            layer_layout=data.get("layer_layout", "out_in"),
            source=data,
        )

    @classmethod
    def from_file(cls, path: Path, builtins: dict[str, FamilySpec] | None = None) -> FamilySpec:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{path}: cannot read mapping: {exc.strerror or exc}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: mapping is not valid JSON ({exc})") from None
        return cls.from_dict(data, builtins)

    def strip(self, name: str) -> str:
        for prefix in self.strip_prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name


def _checked(pattern: Pattern, family: str) -> Pattern:
    needed = {"global": (), "layer": ("layer",), "shared_expert": ("layer",), "expert": ("layer", "expert")}
    if pattern.kind != "ignore" and tuple(sorted(pattern.placeholders)) != tuple(sorted(needed[pattern.kind])):
        raise InputError(
            f"mapping '{family}': template '{pattern.template}' for {pattern.kind} roles must contain "
            + (" and ".join("{" + p + "}" for p in needed[pattern.kind]) or "no placeholder")
        )
    return pattern


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = {**base.get(key, {}), **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged
