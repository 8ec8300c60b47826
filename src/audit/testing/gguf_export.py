"""Write a safetensors checkpoint as GGUF the way llama.cpp's converter does (for tests).

Tensor names become llama.cpp's, q and k rows of ``llama`` and ``deepseek``
models are permuted with the converter's own ``permute``, MoE experts are
stacked into one 3-D tensor per projection (``blk.N.ffn_up_exps``; or, as
older files have them, kept one per expert, ``blk.N.ffn_up.E``), weights are
quantised with ``gguf.quants.quantize`` (norm gains and routers stay F32, as
llama.cpp keeps them), the config becomes ``<arch>.*`` metadata and the
tokenizer's tokens become ``tokenizer.ggml.*``.  ``split_max_tensors`` splits
the file the way ``gguf-split`` does (the package's own writer).  The
``gguf`` package cannot quantise the K-quants (Q4_K, Q6_K);
:func:`random_kquant_blocks` makes valid blocks of them so the reader can be
checked against the package's dequantiser.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from audit.checkpoint import open_checkpoint
from audit.checkpoint.gguf_file import GLOBAL_NAMES, LAYER_NAMES, LEGACY_EXPERTS, MOE_NAMES, PERMUTED

BLOCK_BYTES = {"Q4_K": 144, "Q6_K": 210}  # bytes per 256-element block
F16_SCALE_OFFSET = {"Q4_K": (0, 2), "Q6_K": (208,)}  # where each block keeps its float16 scale(s)
GGUF_ARCHITECTURE = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                     "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "deepseek": "deepseek"}  # model_type -> GGUF's
KEPT_F32 = ("ffn_gate_inp", "ffn_gate_inp_shexp")  # routers: llama.cpp leaves them unquantised


def permute(weights: np.ndarray, heads: int, kv_heads: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: interleave the two rotary halves of every head's rows."""
    if kv_heads is not None and heads != kv_heads:
        heads = kv_heads
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_name(hf_name: str, model_type: str = "llama") -> tuple[str, int | None]:
    """The llama.cpp name of a Hugging Face tensor name, and the expert whose slice of it this is (or None)."""
    for gguf_base, hf_base in GLOBAL_NAMES.items():
        if hf_name.startswith(hf_base + "."):
            return gguf_base + hf_name[len(hf_base):], None
    parts = hf_name.split(".")
    layer, rest = parts[2], ".".join(parts[3:])
    for gguf_base, template in MOE_NAMES.get(model_type, {}).items():
        pattern = re.escape(template).replace(re.escape("{expert}"), r"(\d+)") + r"(\..+)"
        if match := re.fullmatch(pattern, rest):
            expert = int(match.group(1)) if "{expert}" in template else None
            return f"blk.{layer}.{gguf_base}{match.groups()[-1]}", expert
    for gguf_base, hf_base in LAYER_NAMES.items():
        if rest.startswith(hf_base + "."):
            return f"blk.{layer}.{gguf_base}{rest[len(hf_base):]}", None
    raise KeyError(hf_name)


def random_kquant_blocks(rows: int, cols: int, qtype: str, seed: int = 0) -> np.ndarray:
    """Random but valid K-quant bytes for a ``rows x cols`` tensor: random quants, small finite scales."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows, cols // 256, BLOCK_BYTES[qtype]), dtype=np.uint8)
    for offset in F16_SCALE_OFFSET[qtype]:
        scales = (rng.uniform(0.5, 1.5, size=blocks.shape[:2]) * 1e-3).astype(np.float16)
        blocks[:, :, offset:offset + 2] = scales.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(rows, -1)


def write_gguf(source: str | Path, out: str | Path, *, qtype: str = "Q8_0", architecture: str | None = None,
               raw: dict[str, tuple[np.ndarray, str]] | None = None, split_max_tensors: int = 0,
               stacked_experts: bool = True) -> Path:
    """Convert ``source`` (a safetensors checkpoint with config.json) to GGUF at ``out``; the first shard's path.

    ``qtype`` is the GGML type of every weight matrix (F32, F16, BF16, Q8_0, Q4_0, ...);
    ``architecture`` is GGUF's (default: from the config's model_type);
    ``raw`` gives some tensors (by Hugging Face name) as already-encoded blocks and their type;
    ``split_max_tensors`` > 0 writes a split GGUF of shards holding at most that many tensors;
    ``stacked_experts=False`` writes one tensor per expert, as llama.cpp did before it stacked them.
    """
    import gguf

    with open_checkpoint(source) as checkpoint:
        config = checkpoint.config or {}
        model_type = config.get("model_type", "llama")
        architecture = architecture or GGUF_ARCHITECTURE[model_type]
        heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
        writer = gguf.GGUFWriter(str(out), architecture, split_max_tensors=split_max_tensors)
        _write_metadata(writer, config, checkpoint.vocabulary)
        stacks: dict[str, dict[int, np.ndarray]] = {}
        for name, stored in checkpoint.tensors.items():
            values = stored.view().read(np.float32)
            if architecture in PERMUTED and ".self_attn.q_proj." in name:
                values = permute(values, heads, heads)
            elif architecture in PERMUTED and ".self_attn.k_proj." in name:
                values = permute(values, heads, kv_heads)
            target, expert = gguf_name(name, model_type)
            if expert is not None and stacked_experts:
                stacks.setdefault(target, {})[expert] = values
                continue
            if expert is not None:  # blk.N.ffn_up_exps.weight -> blk.N.ffn_up.E.weight
                block, base, suffix = target.split(".", 2)[1], target.split(".")[2], target.split(".", 3)[3]
                legacy = next(old for old, new in LEGACY_EXPERTS.items() if new == base)
                target = f"blk.{block}.{legacy}.{expert}.{suffix}"
            _add(writer, target, *(raw[name] if raw and name in raw else _encoded(values, target, qtype)))
        for target, experts in stacks.items():
            _add(writer, target, *_encoded(np.stack([experts[e] for e in sorted(experts)]), target, qtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return writer.format_shard_names(Path(out))[0]


def _write_metadata(writer, config: dict, vocabulary) -> None:
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    experts = config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts")
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(config.get("num_experts_per_tok", 2))
        if "moe_intermediate_size" in config:
            writer.add_expert_feed_forward_length(config["moe_intermediate_size"])
        if "shared_expert_intermediate_size" in config:
            writer.add_expert_shared_feed_forward_length(config["shared_expert_intermediate_size"])
    if vocabulary is not None:
        writer.add_tokenizer_model("gpt2" if vocabulary.encoding == "byte-level" else "llama")
        writer.add_token_list([t if t is not None else f"[PAD{i}]" for i, t in enumerate(vocabulary.tokens)])
        writer.add_token_types([3 if i in vocabulary.special else 1 for i in range(len(vocabulary.tokens))])


def _encoded(values: np.ndarray, target: str, qtype: str) -> tuple[np.ndarray, str]:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    router = target.startswith("blk.") and target.split(".")[2] in KEPT_F32
    kind = qtype if values.ndim >= 2 and not router else "F32"
    if kind == "F32":
        return np.ascontiguousarray(values, dtype=np.float32), kind
    if kind == "F16":
        return values.astype(np.float16), kind
    return quantize(values, GGMLQuantizationType[kind]), kind


def _add(writer, target: str, encoded: np.ndarray, kind: str) -> None:
    from gguf import GGMLQuantizationType

    writer.add_tensor(target, encoded, raw_shape=encoded.shape, raw_dtype=GGMLQuantizationType[kind])
