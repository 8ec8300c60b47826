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

import re
from dataclasses import dataclass, field
from pathlib import Path

from audit import schema
from audit.errors import InputError, SchemaError, shown
from audit.files import LIMITS, read_json_file
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
    def from_dict(cls, data: object, builtins: dict[str, FamilySpec] | None = None, where: object = "mapping") -> FamilySpec:
        """Parse and validate a spec, every section type-checked; ``extends`` starts from a built-in one."""
        data = _checked_sections(data, where)
        if "extends" in data:
            base = (builtins or {}).get(data["extends"])
            if base is None:
                raise InputError(f"mapping extends unknown family '{shown(data['extends'])}' (known: {', '.join(builtins or {})})")
            data = _merge(base.source, {k: v for k, v in data.items() if k != "extends"})
        family = shown(data["family"])
        if data.get("layer_layout", "out_in") not in ("out_in", "in_out"):
            raise InputError(f"mapping '{family}': layer_layout must be 'out_in' or 'in_out'")
        patterns: list[Pattern] = []
        for kind, allowed in _KINDS.items():
            for role, templates in (data.get(kind) or {}).items():
                if role not in allowed:
                    raise InputError(f"mapping '{family}': '{shown(role)}' is not a {kind} role (known: {sorted(allowed)})")
                for n, template in enumerate([templates] if isinstance(templates, str) else templates):
                    patterns.append(_checked(Pattern(kind, template, (role,), alternate=n > 0), family))
        for template, fused in (data.get("fused") or {}).items():
            into = tuple(fused.get("into", ()))
            if fused.get("split") not in SPLITS or len(into) != (2 if fused.get("split") == "halves" else 3):
                raise InputError(f"mapping '{family}': fused '{shown(template)}' needs split in {SPLITS} and matching 'into'")
            bad = [r for r in into if r not in LAYER_ROLES]
            if bad:
                raise InputError(f"mapping '{family}': fused roles {shown(bad)} are not layer roles")
            patterns.append(_checked(Pattern("layer", template, into, fused["split"]), family))
        patterns += [_checked(Pattern("ignore", t, ()), family) for t in data.get("ignore") or ()]
        if not any(p.kind in ("layer", "global") for p in patterns):
            raise InputError(f"mapping '{family}' maps no layer or global roles")
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
        return cls.from_dict(read_json_file(path, limit=LIMITS["mapping"], what="mapping"), builtins, path)

    def strip(self, name: str) -> str:
        for prefix in self.strip_prefixes:
            if name.startswith(prefix):
                return name[len(prefix):]
        return name


def _checked(pattern: Pattern, family: str) -> Pattern:
    needed = {"global": (), "layer": ("layer",), "shared_expert": ("layer",), "expert": ("layer", "expert")}
    if pattern.kind != "ignore" and tuple(sorted(pattern.placeholders)) != tuple(sorted(needed[pattern.kind])):
        raise InputError(
            f"mapping '{family}': template '{shown(pattern.template)}' for {pattern.kind} roles must contain "
            + (" and ".join("{" + p + "}" for p in needed[pattern.kind]) or "no placeholder")
        )
    return pattern


MAX_TEMPLATES = 2000  # all templates become one regex, matched against every tensor name
_LISTS = ("architectures", "model_types", "strip_prefixes", "ignore")


def _checked_sections(data: object, where: object) -> dict:
    """A mapping document with every section of the right JSON type (one line naming the field otherwise)."""
    data = dict(schema.obj(data, where, "mapping"))
    unknown = set(data) - {"family", "extends", "layer_layout", "fused", *_LISTS, *_KINDS}
    if unknown:
        raise InputError(f"{shown(where, 300)}: unknown key(s) {shown(sorted(unknown), 120)} (known: family, extends, "
                         f"layer_layout, fused, {', '.join((*_LISTS, *_KINDS))})")
    schema.text(data.get("family"), where, "family", limit=200)
    for key in ("extends", "layer_layout"):
        schema.optional(schema.text, data.get(key), where, key, limit=200)
    for key in _LISTS:
        if data.get(key) is not None:
            data[key] = schema.texts(data[key], where, key)  # one string means a list of one
    count = 0
    for kind in _KINDS:
        for role, templates in (schema.optional(schema.obj, data.get(kind), where, kind) or {}).items():
            found = schema.texts(templates, where, f"{kind}.{shown(role, 40)}")
            if not found:
                raise SchemaError(where, f"{kind}.{shown(role, 40)}", "a template or a non-empty list of templates")
            count += len(found)
    for template, fused in (schema.optional(schema.obj, data.get("fused"), where, "fused") or {}).items():
        field = f"fused[{shown(template, 60)!r}]"
        fused = schema.obj(fused, where, field)
        schema.text(fused.get("split"), where, f"{field}.split", limit=40)
        schema.texts(fused.get("into"), where, f"{field}.into")
        count += 1
    if count + len(data.get("ignore") or ()) > MAX_TEMPLATES:
        raise SchemaError(where, "the mapping", f"at most {MAX_TEMPLATES} name templates in all")
    return data


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = {**base.get(key, {}), **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged
