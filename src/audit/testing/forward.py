"""A float64 numpy forward pass of a LLaMA-style causal LM (dense or Mixtral MoE).

It exists to *prove* that a disguise preserves what a model computes (equal logits before and
after) without torch: Hugging Face names and ``[out, in]`` layout, RMSNorm, RoPE in HF's
``rotate_half`` convention, grouped-query attention repeating each kv head for a contiguous
group of query heads (HF ``repeat_kv``), SwiGLU MLP, Mixtral routing (softmax, top-k,
renormalise), optional q/k/v biases (Qwen2), untied or tied head.  Slow and exact on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class Shape:
    """The numbers of an HF config that the forward pass and the disguises need."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    experts: int
    top_k: int
    eps: float
    rope_theta: float

    @classmethod
    def of(cls, config: dict) -> "Shape":
        heads = int(config["num_attention_heads"])
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            experts=int(config.get("num_local_experts") or 0),
            top_k=int(config.get("num_experts_per_tok") or 2),
            eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
        )


def _rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    return gain * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def _rope(x: np.ndarray, theta: float) -> np.ndarray:
    """x: [heads, T, head_dim]; HF rotate_half convention (first half pairs with second)."""
    t, dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.outer(np.arange(t, dtype=np.float64), inv_freq)
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))
    half = dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _linear(t: Tensors, name: str, x: np.ndarray) -> np.ndarray:
    y = x @ t[f"{name}.weight"].T
    bias = t.get(f"{name}.bias")
    return y if bias is None else y + bias


def _attention(t: Tensors, prefix: str, x: np.ndarray, s: Shape) -> np.ndarray:
    n = x.shape[0]
    q = _linear(t, f"{prefix}.q_proj", x).reshape(n, s.heads, s.head_dim).transpose(1, 0, 2)
    k = _linear(t, f"{prefix}.k_proj", x).reshape(n, s.kv_heads, s.head_dim).transpose(1, 0, 2)
    v = _linear(t, f"{prefix}.v_proj", x).reshape(n, s.kv_heads, s.head_dim).transpose(1, 0, 2)
    q, k = _rope(q, s.rope_theta), _rope(k, s.rope_theta)
    group = s.heads // s.kv_heads
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(s.head_dim)
    scores = np.where(np.triu(np.ones((n, n), dtype=bool), 1), -np.inf, scores)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    y = (scores / scores.sum(-1, keepdims=True)) @ v
    return _linear(t, f"{prefix}.o_proj", y.transpose(1, 0, 2).reshape(n, s.heads * s.head_dim))


def _swiglu(t: Tensors, gate: str, up: str, down: str, x: np.ndarray) -> np.ndarray:
    g = x @ t[gate].T
    return (g / (1.0 + np.exp(-g)) * (x @ t[up].T)) @ t[down].T


def _feed_forward(t: Tensors, layer: str, x: np.ndarray, s: Shape) -> np.ndarray:
    if not s.experts:
        return _swiglu(t, f"{layer}.mlp.gate_proj.weight", f"{layer}.mlp.up_proj.weight", f"{layer}.mlp.down_proj.weight", x)
    moe = f"{layer}.block_sparse_moe"
    logits = x @ t[f"{moe}.gate.weight"].T
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, : s.top_k]
    weights = np.zeros_like(probs)
    np.put_along_axis(weights, top, np.take_along_axis(probs, top, -1), -1)
    weights /= weights.sum(-1, keepdims=True)
    out = np.zeros_like(x)
    for e in range(s.experts):
        ex = f"{moe}.experts.{e}"
        out += weights[:, e : e + 1] * _swiglu(t, f"{ex}.w1.weight", f"{ex}.w3.weight", f"{ex}.w2.weight", x)
    return out


def logits(tensors: Tensors, config: dict, tokens: np.ndarray) -> np.ndarray:
    """Logits ``[T, vocab]`` in float64 for one sequence of token ids."""
    s = Shape.of(config)
    t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    x = t["model.embed_tokens.weight"][np.asarray(tokens)]
    for i in range(s.layers):
        layer = f"model.layers.{i}"
        x = x + _attention(t, f"{layer}.self_attn", _rms_norm(x, t[f"{layer}.input_layernorm.weight"], s.eps), s)
        x = x + _feed_forward(t, layer, _rms_norm(x, t[f"{layer}.post_attention_layernorm.weight"], s.eps), s)
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return _rms_norm(x, t["model.norm.weight"], s.eps) @ head.T


def max_logit_difference(a: tuple[Tensors, dict], b: tuple[Tensors, dict], tokens: np.ndarray) -> float:
    """max |logits(a) - logits(b)| on ``tokens`` ([T] or [batch, T]): the function-preservation check."""
    batch = np.atleast_2d(np.asarray(tokens))
    return float(max(np.abs(logits(*a, row) - logits(*b, row)).max() for row in batch))
