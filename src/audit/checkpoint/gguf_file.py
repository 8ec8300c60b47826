"""GGUF files (llama.cpp's format, the usual way quantised models circulate), read with the ``gguf`` package.

A GGUF file is presented to the rest of the tool as if it were the Hugging
Face checkpoint it was converted from, so roles and methods need nothing new:

- tensor names are mapped back (``blk.3.attn_q.weight`` ->
  ``model.layers.3.self_attn.q_proj.weight``) for the families whose
  llama.cpp names are listed in :data:`LAYER_NAMES` and :data:`MOE_NAMES`;
- MoE experts, which llama.cpp stores stacked (``blk.N.ffn_up_exps.weight``,
  one slice per expert; older files ``blk.N.ffn_up.E.weight``), become one
  tensor per expert under the Hugging Face name of the family (Mixtral's
  ``block_sparse_moe.experts.E.w3``, Qwen-MoE's ``mlp.experts.E.up_proj`` ...),
  each a byte range of the stacked tensor: reading one expert maps (or
  dequantises) that expert's bytes only;
- a split GGUF (llama.cpp's ``gguf-split``: ``NAME-00001-of-00003.gguf`` ...,
  ``split.*`` metadata, the model's metadata in the first shard) is read
  whole from any of its shards or its folder: :func:`split_shards` finds the
  set by name, :func:`check_split` checks it against the metadata;
- a ``config.json`` equivalent is built from the ``<arch>.*`` metadata
  (depth, widths, head counts), and the vocabulary from ``tokenizer.ggml.*``;
- F32, F16 and BF16 tensors are memory-mapped as stored; quantised tensors
  (Q8_0, Q4_0, Q4_K, Q6_K and every other type the package knows) are
  dequantised with ``gguf.quants.dequantize``, one tensor at a time;
- llama.cpp's converter reorders the rows of q and k of Llama-architecture
  models (its ``permute``, for the interleaved rotary layout); that is undone
  here, so row ``i`` of q means what it means in the original checkpoint.

Memory: a quantised or permuted tensor is held dequantised (float32) while a
method reads it, the last one only; plain float tensors stay memory-mapped.
"""

from __future__ import annotations

import glob
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audit.checkpoint.dtypes import DTYPES, ITEMSIZE, stored_dtype
from audit.checkpoint.safetensors_file import MAX_TENSORS, TensorEntry, already_open, close_mapped, drop_pages, remember_open
from audit.checkpoint.vocabulary import Vocabulary, vocabulary_from_gguf
from audit.errors import InputError, shown
from audit.files import is_regular, open_regular

MAGIC = b"GGUF"
VERSIONS = (2, 3)

# llama.cpp block tensor names -> Hugging Face Llama-style names (Llama, Mistral, Yi, Qwen2, Qwen3 share them).
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_QWEN_MOE = {"ffn_gate_inp": "mlp.gate", "ffn_gate_exps": "mlp.experts.{expert}.gate_proj",
             "ffn_up_exps": "mlp.experts.{expert}.up_proj", "ffn_down_exps": "mlp.experts.{expert}.down_proj",
             "ffn_gate_shexp": "mlp.shared_expert.gate_proj", "ffn_up_shexp": "mlp.shared_expert.up_proj",
             "ffn_down_shexp": "mlp.shared_expert.down_proj", "ffn_gate_inp_shexp": "mlp.shared_expert_gate"}
# llama.cpp MoE block tensors -> Hugging Face names within the block, by model_type ("{expert}": the expert's slice)
MOE_NAMES = {
    "mixtral": {"ffn_gate_inp": "block_sparse_moe.gate", "ffn_gate_exps": "block_sparse_moe.experts.{expert}.w1",
                "ffn_up_exps": "block_sparse_moe.experts.{expert}.w3", "ffn_down_exps": "block_sparse_moe.experts.{expert}.w2"},
    "qwen2_moe": _QWEN_MOE,
    "qwen3_moe": _QWEN_MOE,
    "deepseek": {**{k: v for k, v in _QWEN_MOE.items() if "shexp" not in k},
                 "ffn_gate_shexp": "mlp.shared_experts.gate_proj", "ffn_up_shexp": "mlp.shared_experts.up_proj",
                 "ffn_down_shexp": "mlp.shared_experts.down_proj"},
}
LEGACY_EXPERTS = {"ffn_gate": "ffn_gate_exps", "ffn_up": "ffn_up_exps", "ffn_down": "ffn_down_exps"}  # blk.N.ffn_up.E
# GGUF general.architecture -> (Hugging Face architectures entry, model_type); "llama" with experts is Mixtral
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "qwen2moe": ("Qwen2MoeForCausalLM", "qwen2_moe"),
    "qwen3moe": ("Qwen3MoeForCausalLM", "qwen3_moe"),
    "deepseek": ("DeepseekForCausalLM", "deepseek"),
}
MIXTRAL = ("MixtralForCausalLM", "mixtral")
PERMUTED = {"llama", "deepseek"}  # architectures whose q/k rows llama.cpp's converter permutes
PLAIN_TYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64"}  # GGML type -> dtype mapped as stored
CONFIG_KEYS = {  # GGUF "<arch>.<key>" -> config.json key
    "block_count": "num_hidden_layers",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "context_length": "max_position_embeddings",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "expert_used_count": "num_experts_per_tok",
    "expert_feed_forward_length": "moe_intermediate_size",
    "expert_shared_feed_forward_length": "shared_expert_intermediate_size",
    "expert_shared_count": "n_shared_experts",
    "leading_dense_block_count": "first_k_dense_replace",
}
EXPERT_COUNT = {"mixtral": "num_local_experts", "qwen2_moe": "num_experts", "qwen3_moe": "num_experts",
                "deepseek": "n_routed_experts"}  # config.json's name for "<arch>.expert_count"
SPLIT_NAME = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.gguf", re.IGNORECASE)  # gguf-split's shard names


def looks_like_gguf(path: Path) -> bool:
    """Whether a file starts with the GGUF magic (whatever its name)."""
    try:
        with open_regular(path, what="GGUF") as handle:
            return handle.read(4) == MAGIC
    except (OSError, InputError):
        return False


def unpermute_rows(rows: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute(w, n_head)`` of q/k rows (within each head, halves were interleaved)."""
    count = rows.shape[0]
    if heads <= 0 or count % (2 * heads):
        raise InputError(f"cannot undo llama.cpp's q/k permutation: {count} rows for {heads} heads")
    return rows.reshape(heads, count // heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _reopen(path: Path, head: Path | None = None) -> GGUFFile:
    """The already parsed file if this process has it (forked workers inherit it), else a fresh parse."""
    return already_open(path, GGUFFile) or GGUFFile(path, head=None if head is None else _reopen(head))


def split_shards(path: Path) -> list[Path]:
    """Every shard of the split GGUF that ``path`` is one of, in order (``[path]`` if not named as a shard).

    gguf-split names shard k of n ``NAME-0000k-of-0000n.gguf``; the set beside
    ``path`` must be exactly shards 1..n of one n.
    """
    match = SPLIT_NAME.fullmatch(path.name)
    if match is None:
        return [path]
    return _complete_set(path.parent, match.group(1))


def _complete_set(directory: Path, stem: str) -> list[Path]:
    found: dict[tuple[int, int], Path] = {}
    for candidate in directory.glob(f"{glob.escape(stem)}-*-of-*"):
        match = SPLIT_NAME.fullmatch(candidate.name)
        if match and match.group(1) == stem and is_regular(candidate):
            found[(int(match.group(2)), int(match.group(3)))] = candidate
    where = f"split GGUF '{shown(stem)}' in {shown(directory, 300)}"
    counts = sorted({count for _, count in found})
    if not counts:
        raise InputError(f"{where}: no readable shard")
    if len(counts) > 1:
        a, b = (next(p.name for (_, c), p in sorted(found.items()) if c == count) for count in counts[:2])
        raise InputError(f"{where}: shards of different sets ({shown(a)} and {shown(b)}); keep one set per folder")
    count = counts[0]
    numbers = sorted(number for number, _ in found)
    extra = [n for n in numbers if not 1 <= n <= count]
    if extra:
        raise InputError(f"{where}: {shown(found[(extra[0], count)].name)} is not one of shards 1..{count}")
    missing = sorted(set(range(1, count + 1)) - set(numbers))
    if missing:
        name = f"{stem}-{missing[0]:05d}-of-{count:05d}.gguf"
        raise InputError(f"{where}: shard {missing[0]} of {count} ({shown(name)}) is missing"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return [found[(n, count)] for n in range(1, count + 1)]


def gguf_set_in(directory: Path) -> list[Path]:
    """The GGUF weights of a folder: its one GGUF file, or the shards of its one split GGUF."""
    ggufs = sorted(p for p in directory.glob("*.gguf") if is_regular(p))
    stems = {m.group(1) if (m := SPLIT_NAME.fullmatch(p.name)) else None for p in ggufs}
    if len(ggufs) > 1 and (len(stems) > 1 or None in stems):
        raise InputError(f"{directory}: holds {len(ggufs)} GGUF files (e.g. {ggufs[0].name}, {ggufs[1].name}); "
                         "pass the one to audit")
    return split_shards(ggufs[0]) if ggufs else []


def check_split(files: list[GGUFFile]) -> None:
    """Refuse a set of shards whose ``split.*`` metadata does not say they are this whole set, in this order."""
    total = files[0].metadata.get("split.tensors.count")
    for number, file in enumerate(files):
        no, count = file.metadata.get("split.no"), file.metadata.get("split.count")
        if len(files) == 1 and count in (None, 1) and no in (None, 0):
            return  # not split, or a "split" of one
        if not (isinstance(no, int) and isinstance(count, int)):
            raise InputError(f"{file.path}: named as shard {number + 1} of {len(files)} of a split GGUF but has no "
                             "split.no/split.count metadata")
        if (no, count) != (number, len(files)):
            raise InputError(f"{file.path}: its metadata says shard {no + 1} of {count}, but it is read as shard "
                             f"{number + 1} of {len(files)}"
                             + (" (a shard of a split GGUF named otherwise: name the shards NAME-0000k-of-0000n.gguf)"
                                if len(files) == 1 else " (shards of different splits mixed?)"))
    stored = sum(file.stored_count for file in files)
    if not isinstance(total, int) or isinstance(total, bool):
        raise InputError(f"{files[0].path}: first shard of a split GGUF without split.tensors.count")
    if total != stored:
        raise InputError(f"{files[0].path}: split GGUF says {total} tensors in all, but its {len(files)} shards hold "
                         f"{stored} (a shard of another split mixed in?)")


@dataclass(frozen=True)
class _Stored:
    """A GGUF tensor as stored: its llama.cpp name, GGML type, byte range and how to present it."""

    gguf_name: str
    ggml_type: str
    offset: int
    nbytes: int
    heads: int | None  # undo the q/k permutation with this many heads
    expert: int | None = None  # this expert's slice of a stacked tensor


def _header_counts(path: Path, size: int) -> None:
    """Refuse what is not GGUF, or whose counts cannot fit in the file, before the package parses it."""
    try:
        with open_regular(path, what="GGUF") as handle:
            head = handle.read(24)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(head) < 24 or head[:4] != MAGIC:
        raise InputError(f"{path}: not a GGUF file (no GGUF magic and header)")
    version, tensors, kvs = struct.unpack("<IQQ", head[4:24])
    if version not in VERSIONS:
        raise InputError(f"{path}: GGUF version {version} is not supported (only {', '.join(map(str, VERSIONS))})")
    if tensors * 24 + kvs * 12 > size:  # every tensor info and key/value takes at least that many bytes
        raise InputError(f"{path}: GGUF header claims {tensors} tensors and {kvs} metadata keys, more than the "
                         f"{size}-byte file can hold (truncated or corrupted)")
    if tensors > MAX_TENSORS:
        raise InputError(f"{path}: GGUF header claims {tensors:,} tensors (limit {MAX_TENSORS:,} per file); corrupted or hostile")


class GGUFFile:
    """One GGUF file: validated metadata, tensors under Hugging Face names, a read-only memory map."""

    def __init__(self, path: Path, *, head: GGUFFile | None = None) -> None:
        """``head`` is the first shard of a split GGUF, which holds the model's metadata (None: this file)."""
        self.path = Path(path)
        self.head = head
        try:
            self.size = self.path.stat().st_size
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        _header_counts(self.path, self.size)
        import gguf  # heavy; only for GGUF input

        reader = None
        try:
            reader = gguf.GGUFReader(self.path, "r")
            fields = {name: field.contents() for name, field in reader.fields.items()}
            infos = [(t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.n_elements), int(t.n_bytes),
                      int(t.data_offset)) for t in reader.tensors]
        except InputError:
            raise
        except Exception as exc:  # the package raises whatever its parser meets on corrupt input
            raise InputError(f"{self.path}: not a valid GGUF file, truncated or corrupted "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        finally:
            del reader  # its own memory map; ours is opened lazily below
        self.metadata: dict[str, Any] = fields
        self.model_metadata = head.metadata if head is not None else fields
        self.stored_count = len(infos)
        self.architecture = str(self.model_metadata.get("general.architecture") or "")
        if self.architecture not in ARCHITECTURES:
            raise InputError(f"{self.path}: GGUF architecture '{self.architecture or '(none)'}' is not supported "
                             f"(supported: {', '.join(sorted(ARCHITECTURES))})")
        experts = self._meta("expert_count")
        self.experts = experts if isinstance(experts, int) and not isinstance(experts, bool) and experts > 0 else 0
        self.config = head.config if head is not None else self._config()
        self.model_type = self.config["model_type"]
        self.entries: dict[str, TensorEntry] = {}
        self._stored: dict[str, _Stored] = {}
        for name, ggml_type, ne, numel, nbytes, offset in infos:
            self._add(name, ggml_type, ne, numel, nbytes, offset)
        self.entries = dict(sorted(self.entries.items()))
        self.tensor_types = {name: self._stored[name].ggml_type for name in self.entries}
        self._mmap: mmap.mmap | None = None
        self._held: tuple[str, np.ndarray] | None = None
        remember_open(self)

    def __reduce__(self) -> tuple:
        """Pickled as its path: a worker reuses the parsed file it inherited (fork), else reopens it."""
        return (_reopen, (self.path, None if self.head is None else self.head.path))

    def _meta(self, key: str) -> Any:
        return self.model_metadata.get(f"{self.architecture}.{key}")

    def _config(self) -> dict:
        architecture, model_type = MIXTRAL if self.architecture == "llama" and self.experts else ARCHITECTURES[self.architecture]
        config: dict[str, Any] = {"architectures": [architecture], "model_type": model_type,
                                  "source_format": "gguf"}
        for key, name in CONFIG_KEYS.items():
            value = self._meta(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                config[name] = value
        if self.experts:
            config[EXPERT_COUNT.get(model_type, "num_experts")] = self.experts
        tokens = self.model_metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list):
            config["vocab_size"] = len(tokens)
        return config

    def _add(self, name: str, ggml_type: str, ne: list[int], numel: int, nbytes: int, offset: int) -> None:
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise InputError(f"{self.path}: tensor '{name}' lies outside the file (bytes {offset}..{offset + nbytes} "
                             f"of {self.size}; truncated?)")
        if any(d <= 0 for d in ne) or math.prod(ne) != numel:
            raise InputError(f"{self.path}: tensor '{name}' has an impossible shape {ne}")
        shape = tuple(reversed(ne))  # GGUF lists the fastest-varying dimension first
        hf_name, heads, expert = self._hf_name(name)
        dtype = PLAIN_TYPES.get(ggml_type, "F32")  # quantised tensors are read dequantised to float32
        if ggml_type in PLAIN_TYPES and nbytes != numel * ITEMSIZE[dtype]:
            raise InputError(f"{self.path}: tensor '{name}' of type {ggml_type} has {nbytes} bytes for {numel} elements")
        if hf_name.endswith(".shared_expert_gate.weight") and len(shape) == 1:
            shape = (1, *shape)  # llama.cpp may store Qwen-MoE's [1, hidden] shared-expert gate as a vector
        if expert is None:
            self._enter(hf_name, _Stored(name, ggml_type, offset, nbytes, heads), dtype, shape)
            return
        if "{expert}" in hf_name:  # stacked experts: one entry per expert, each a byte range of the stack
            if len(shape) != 3:
                raise InputError(f"{self.path}: stacked expert tensor '{name}' has shape {list(shape)}, not [experts, out, in]")
            count, shape = shape[0], shape[1:]
            if self.experts and count != self.experts:
                raise InputError(f"{self.path}: '{name}' stacks {count} experts but {self.architecture}.expert_count is {self.experts}")
            if len(self.entries) + count > MAX_TENSORS:
                raise InputError(f"{self.path}: '{name}' stacks {count:,} experts, more tensors than a file may hold "
                                 f"({MAX_TENSORS:,}); corrupted or hostile")
            if nbytes % count:
                raise InputError(f"{self.path}: '{name}' has {nbytes} bytes, not divisible among {count} experts")
            each = nbytes // count
            for number in range(count):
                self._enter(hf_name.replace("{expert}", str(number)), _Stored(name, ggml_type, offset + number * each, each, None, number),
                            dtype, shape)
            return
        self._enter(hf_name, _Stored(name, ggml_type, offset, nbytes, None, expert), dtype, shape)

    def _enter(self, hf_name: str, stored: _Stored, dtype: str, shape: tuple[int, ...]) -> None:
        if hf_name in self.entries:
            raise InputError(f"{self.path}: two tensors map to '{shown(hf_name)}'")
        self.entries[hf_name] = TensorEntry(hf_name, dtype, shape, stored.offset, stored.offset + stored.nbytes)
        self._stored[hf_name] = stored

    def _hf_name(self, name: str) -> tuple[str, int | None, int | None]:
        """The Hugging Face name of a llama.cpp tensor, the head count to unpermute it with (or None), and
        its expert: None for a plain tensor, -1 for a stack of experts (the name keeps ``{expert}``)."""
        parts = name.split(".")
        block = parts[0] == "blk" and len(parts) >= 4 and parts[1].isdigit() and len(parts[1]) <= 9
        moe = MOE_NAMES.get(self.model_type, {})
        if block and parts[2] in LEGACY_EXPERTS and len(parts) >= 5 and parts[3].isdigit() and len(parts[3]) <= 9 and moe:
            template = moe[LEGACY_EXPERTS[parts[2]]].format(expert=int(parts[3]))
            return f"model.layers.{int(parts[1])}.{template}.{'.'.join(parts[4:])}", None, int(parts[3])
        if block and parts[2] in moe:
            template, suffix = moe[parts[2]], ".".join(parts[3:])
            stacked = "{expert}" in template
            return f"model.layers.{int(parts[1])}.{template}.{suffix}", None, -1 if stacked else None
        if block and parts[2] in LAYER_NAMES:
            base, suffix = parts[2], ".".join(parts[3:])
            heads = None
            if self.architecture in PERMUTED and base in ("attn_q", "attn_k"):
                key = "attention.head_count" if base == "attn_q" else "attention.head_count_kv"
                heads = self._meta(key) or self._meta("attention.head_count")
                if not isinstance(heads, int) or heads <= 0:
                    raise InputError(f"{self.path}: {self.architecture}.{key} is missing; cannot undo the q/k permutation")
            return f"model.layers.{int(parts[1])}.{LAYER_NAMES[base]}.{suffix}", heads, None
        if len(parts) >= 2 and parts[0] in GLOBAL_NAMES:
            return f"{GLOBAL_NAMES[parts[0]]}.{'.'.join(parts[1:])}", None, None
        return name, None, None  # kept under its own name (roles leave it unassigned)

    @property
    def vocabulary(self) -> Vocabulary | None:
        tokens = self.model_metadata.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list):
            return None
        types = self.model_metadata.get("tokenizer.ggml.token_type")
        model = self.model_metadata.get("tokenizer.ggml.model")
        return vocabulary_from_gguf([str(t) for t in tokens], types if isinstance(types, list) else None,
                                    str(model) if model is not None else None, self.path)

    def _map(self) -> mmap.mmap:
        if self._mmap is None:
            try:
                with open_regular(self.path, what="GGUF") as handle:
                    self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as exc:
                raise InputError(f"{self.path}: cannot map: {exc.strerror or exc}") from None
            if len(self._mmap) != self.size:
                raise InputError(f"{self.path}: file changed size while open")
        return self._mmap

    def array(self, entry: TensorEntry, bits: bool = False) -> np.ndarray:
        """The tensor in Hugging Face layout: a read-only map for plain floats, else dequantised float32;
        ``bits``: as unsigned integers of the entry dtype's width (see :func:`stored_dtype`)."""
        stored = self._stored[entry.name]
        if stored.ggml_type in PLAIN_TYPES and stored.heads is None:
            return np.frombuffer(self._map(), dtype=stored_dtype(entry.dtype, bits), count=entry.numel,
                                 offset=stored.offset).reshape(entry.shape)
        if self._held is None or self._held[0] != entry.name:
            values = self._decode(stored, entry)
            values.flags.writeable = False
            self._held = (entry.name, values)
        return self._held[1].view(stored_dtype(entry.dtype, True)) if bits else self._held[1]

    def _decode(self, stored: _Stored, entry: TensorEntry) -> np.ndarray:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        raw = np.frombuffer(self._map(), dtype=np.uint8, count=stored.nbytes, offset=stored.offset)
        if stored.ggml_type in PLAIN_TYPES:
            values = raw.view(DTYPES[entry.dtype]).reshape(entry.shape)
        else:
            try:
                values = dequantize(raw.reshape(entry.shape[0] if len(entry.shape) > 1 else 1, -1),
                                    GGMLQuantizationType[stored.ggml_type])
                values = np.asarray(values, dtype=np.float32).reshape(entry.shape)
            except (NotImplementedError, ValueError, KeyError) as exc:
                raise InputError(f"{self.path}: cannot dequantise tensor '{stored.gguf_name}' of type "
                                 f"{stored.ggml_type} ({type(exc).__name__}: {exc})") from None
        if stored.heads is not None:
            values = unpermute_rows(values, stored.heads)
        return np.ascontiguousarray(values)

    def release(self, entry: TensorEntry, first_byte: int = 0, last_byte: int | None = None) -> None:
        """Drop this process's pages of a mapped tensor; a whole-tensor release drops a dequantised copy."""
        stored = self._stored[entry.name]
        if last_byte is None and self._held is not None and self._held[0] == entry.name:
            self._held = None
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        if stored.ggml_type in PLAIN_TYPES and stored.heads is None:  # byte offsets are the stored ones
            start = stored.offset + first_byte
            stop = stored.offset + (stored.nbytes if last_byte is None else min(last_byte, stored.nbytes))
        else:  # a decoded copy was read: all its stored bytes are done with
            start, stop = stored.offset, stored.offset + stored.nbytes
        drop_pages(self._mmap, start, stop)

    def close(self) -> None:
        self._held = None
        close_mapped(self._mmap)
        self._mmap = None

    def __repr__(self) -> str:
        return f"GGUFFile({os.fspath(self.path)!r}, architecture={self.architecture!r}, tensors={len(self.entries)})"
