"""Typed checks of the JSON documents read from input files, at the edge.

A hand-edited or hostile ``config.json``, shard index, mapping file or power
table can hold any JSON value in any field.  Each reader here checks
exactly the fields the audit uses, with their types and ranges, and returns
plain Python values that later code can trust; anything else is a
:class:`~audit.errors.SchemaError` naming the file and the field.  Fields the
audit does not read are left alone (a real config carries hundreds).
"""

from __future__ import annotations

from typing import Any

from audit.errors import SchemaError, shown

MAX_COUNT = 2**31  # head counts, widths, token ids: anything larger is not a model's
MAX_TEXT = 4096  # one template, prefix or name


def obj(value: Any, where: object, field: str) -> dict:
    if not isinstance(value, dict):
        raise SchemaError(where, field, f"a JSON object, not {_kind(value)}")
    return value


def text(value: Any, where: object, field: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise SchemaError(where, field, f"a string, not {_kind(value)}")
    if len(value) > limit:
        raise SchemaError(where, field, f"at most {limit} characters, not {len(value):,}")
    return value


def integer(value: Any, where: object, field: str, *, low: int = 0, high: int = MAX_COUNT) -> int:
    if type(value) is not int:
        raise SchemaError(where, field, f"a whole number, not {_kind(value)}")
    if not low <= value <= high:
        raise SchemaError(where, field, f"a whole number from {low} to {high}")
    return value


def number(value: Any, where: object, field: str, *, low: float, high: float) -> float:
    """A finite JSON number (integer or not) from ``low`` to ``high``."""
    if type(value) not in (int, float) or not low <= value <= high:  # NaN fails the comparison too
        raise SchemaError(where, field, f"a number from {low:g} to {high:g}")
    return float(value)


def texts(value: Any, where: object, field: str) -> list[str]:
    """A list of strings (one string is accepted as a list of one)."""
    if isinstance(value, str):
        return [text(value, where, field)]
    if not isinstance(value, list):
        raise SchemaError(where, field, f"a string or a list of strings, not {_kind(value)}")
    return [text(item, where, f"{field}[{i}]") for i, item in enumerate(value)]


def optional(check, value: Any, where: object, field: str, **limits: Any) -> Any:
    """``check(value)``, or None when the field is absent or null."""
    return None if value is None else check(value, where, field, **limits)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {shown(value, 24)}"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


# ---- config.json ---------------------------------------------------------------------------------
CONFIG_STRINGS = ("model_type",)
CONFIG_COUNTS = ("num_attention_heads", "n_head", "num_heads", "num_key_value_heads", "num_kv_heads",
                 "multi_query_group_num", "hidden_size", "n_embd", "d_model", "head_dim")


def config(document: Any, where: object) -> dict:
    """``config.json``: an object whose fields the audit reads have the right types (null allowed).

    Returns the config the roles read: the nested ``text_config`` of a
    multimodal model when present, else the document, both checked.
    """
    document = obj(document, where, "config.json")
    for scope, fields in (("", document), ("text_config.", document.get("text_config"))):
        if fields is None and scope:
            continue
        fields = obj(fields, where, "text_config")
        for key in CONFIG_STRINGS:
            optional(text, fields.get(key), where, scope + key)
        if fields.get("architectures") is not None:
            texts(fields["architectures"], where, scope + "architectures")
        for key in CONFIG_COUNTS:
            optional(integer, fields.get(key), where, scope + key, low=1)
    return document


# ---- model.safetensors.index.json ----------------------------------------------------------------
def weight_map(document: Any, where: object) -> dict[str, str]:
    """The index's ``weight_map``: a non-empty object of tensor name -> shard file name."""
    document = obj(document, where, "shard index")
    found = obj(document.get("weight_map"), where, "weight_map")
    if not found:
        raise SchemaError(where, "weight_map", "a non-empty object of tensor name -> shard file")
    return {name: text(shard, where, f"weight_map[{shown(name, 60)!r}]", limit=255) for name, shard in found.items()}
