"""Write a Llama-family safetensors checkpoint as GGUF the way llama.cpp's converter does (for tests).

Tensor names become llama.cpp's, q and k rows of ``llama`` models are
permuted with the converter's own ``permute``, 2-D weights are quantised
with ``gguf.quants.quantize`` (norm gains stay F32, as llama.cpp keeps
them), the config becomes ``llama.*`` metadata and the tokenizer's tokens
become ``tokenizer.ggml.*``.  The ``gguf`` package cannot quantise the
K-quants (Q4_K, Q6_K); :func:`random_kquant_blocks` makes valid blocks of
them so the reader can be checked against the package's dequantiser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit.checkpoint import open_checkpoint
from audit.checkpoint.gguf_file import GLOBAL_NAMES, LAYER_NAMES

BLOCK_BYTES = {"Q4_K": 144, "Q6_K": 210}  # bytes per 256-element block
F16_SCALE_OFFSET = {"Q4_K": (0, 2), "Q6_K": (208,)}  # where each block keeps its float16 scale(s)


def permute(weights: np.ndarray, heads: int, kv_heads: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: interleave the two rotary halves of every head's rows."""
    if kv_heads is not None and heads != kv_heads:
        heads = kv_heads
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_name(hf_name: str) -> str:
    """The llama.cpp name of a Hugging Face Llama-style tensor name (``model.lm_head`` as synth writes it too)."""
    hf_name = hf_name.removeprefix("model.") if hf_name.startswith("model.lm_head.") else hf_name
    for gguf_base, hf_base in GLOBAL_NAMES.items():
        if hf_name.startswith(hf_base + "."):
            return gguf_base + hf_name[len(hf_base):]
    parts = hf_name.split(".")
    rest = ".".join(parts[3:])
    for gguf_base, hf_base in LAYER_NAMES.items():
        if rest.startswith(hf_base + "."):
            return f"blk.{parts[2]}.{gguf_base}{rest[len(hf_base):]}"
    raise KeyError(hf_name)


def random_kquant_blocks(rows: int, cols: int, qtype: str, seed: int = 0) -> np.ndarray:
    """Random but valid K-quant bytes for a ``rows x cols`` tensor: random quants, small finite scales."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(rows, cols // 256, BLOCK_BYTES[qtype]), dtype=np.uint8)
    for offset in F16_SCALE_OFFSET[qtype]:
        scales = (rng.uniform(0.5, 1.5, size=blocks.shape[:2]) * 1e-3).astype(np.float16)
        blocks[:, :, offset:offset + 2] = scales.view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(rows, -1)


def write_gguf(source: str | Path, out: str | Path, *, qtype: str = "Q8_0", architecture: str = "llama",
               raw: dict[str, tuple[np.ndarray, str]] | None = None) -> Path:
    """Convert ``source`` (a Llama-style safetensors checkpoint with config.json) to GGUF at ``out``.

    ``qtype`` is the GGML type of every 2-D weight (F32, F16, BF16, Q8_0, Q4_0, ...);
    ``raw`` gives some tensors (by Hugging Face name) as already-encoded blocks and their type.
    """
    import gguf
    from gguf.quants import quantize

    with open_checkpoint(source) as checkpoint:
        config = checkpoint.config or {}
        heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
        writer = gguf.GGUFWriter(str(out), architecture)
        writer.add_block_count(config["num_hidden_layers"])
        writer.add_embedding_length(config["hidden_size"])
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_context_length(config.get("max_position_embeddings", 2048))
        writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
        vocabulary = checkpoint.vocabulary
        if vocabulary is not None:
            writer.add_tokenizer_model("gpt2" if vocabulary.encoding == "byte-level" else "llama")
            writer.add_token_list([t if t is not None else f"[PAD{i}]" for i, t in enumerate(vocabulary.tokens)])
            writer.add_token_types([3 if i in vocabulary.special else 1 for i in range(len(vocabulary.tokens))])
        for name, stored in checkpoint.tensors.items():
            values = stored.view().read(np.float32)
            if architecture == "llama" and ".self_attn.q_proj." in name:
                values = permute(values, heads, heads)
            elif architecture == "llama" and ".self_attn.k_proj." in name:
                values = permute(values, heads, kv_heads)
            kind = qtype if values.ndim == 2 else "F32"
            if raw and name in raw:
                encoded, kind = raw[name]
            elif kind == "F32":
                encoded = np.ascontiguousarray(values, dtype=np.float32)
            elif kind == "F16":
                encoded = values.astype(np.float16)
            else:
                encoded = quantize(values, gguf.GGMLQuantizationType[kind])
            writer.add_tensor(gguf_name(name), encoded, raw_shape=encoded.shape,
                              raw_dtype=gguf.GGMLQuantizationType[kind])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(out)

