"""Derived copies of synthetic Llama checkpoints, for the methods' known-answer tests.

Each transform takes and returns {tensor name: float32 array} in the stored
(Llama, [out, in]) layout; :func:`derive` writes the result next to the
original's config.json and tokenizer.json.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from audit import assign_roles, open_checkpoint
from audit.methods import Model
from audit.testing.synth import Dims, make_checkpoint

Tensors = dict[str, np.ndarray]
LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight$")
READS_RESIDUAL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "w1", "w3")
WRITES_RESIDUAL = ("o_proj", "down_proj", "w2")


def write_tokenizer(directory: Path, vocab: int) -> None:
    """A WordLevel tokenizer.json whose token strings are t0, t1, ..."""
    data = {"version": "1.0", "model": {"type": "WordLevel", "vocab": {f"t{i}": i for i in range(vocab)}}}
    (directory / "tokenizer.json").write_text(json.dumps(data))


def build(directory: Path, seed: int, dims: Dims, family: str = "llama") -> Path:
    """A random-init checkpoint with a tokenizer."""
    built = make_checkpoint(directory, family, dims, seed=seed)
    write_tokenizer(built.path, dims.vocab)
    return built.path


def derive(source: Path, target: Path, transform: Callable[[Tensors], Tensors]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for extra in ("config.json", "tokenizer.json"):
        if (source / extra).exists():
            shutil.copy(source / extra, target / extra)
    tensors = transform(load_file(source / "model.safetensors"))
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, target / "model.safetensors")
    return target


def load_model(path: Path) -> Model:
    """Roles and vocabulary; the checkpoint stays open for the test's lifetime (memory-mapped)."""
    checkpoint = open_checkpoint(path)
    return Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary)


def layer_tensors(tensors: Tensors) -> dict[int, dict[str, str]]:
    """layer -> {short name (q_proj, mlp.experts.0.w1, ...): full tensor name}."""
    out: dict[int, dict[str, str]] = {}
    for name in tensors:
        if m := LAYER.match(name):
            out.setdefault(int(m.group(1)), {})[m.group(2).split(".", 1)[1] if m.group(2).startswith("self_attn") else m.group(2)] = name
    return out


def finetune(scale: float, seed: int) -> Callable[[Tensors], Tensors]:
    """Add independent noise of ``scale`` times each tensor's std (a fine-tune-like drift)."""
    def apply(tensors: Tensors) -> Tensors:
        rng = np.random.default_rng(seed)
        return {k: v + scale * v.std() * rng.standard_normal(v.shape) for k, v in sorted(tensors.items())}
    return apply


def permute_hidden_units(seed: int) -> Callable[[Tensors], Tensors]:
    """Permute each MLP's hidden units (gate/up rows with down columns): function-preserving."""
    def apply(tensors: Tensors) -> Tensors:
        rng, out = np.random.default_rng(seed), dict(tensors)
        for layer, names in sorted(layer_tensors(tensors).items()):
            for prefix in sorted({n.rsplit(".", 1)[0] for n in names if n.startswith("mlp.")}):
                gate, up, down = (f"{prefix}.{p}" for p in ("gate_proj", "up_proj", "down_proj"))
                if gate not in names:
                    gate, up, down = (f"{prefix}.{p}" for p in ("w1", "w3", "w2"))
                if gate not in names:
                    continue
                perm = rng.permutation(tensors[names[up]].shape[0])
                out[names[gate]] = tensors[names[gate]][perm]
                out[names[up]] = tensors[names[up]][perm]
                out[names[down]] = tensors[names[down]][:, perm]
        return out
    return apply


def rescale_attention(seed: int, values_too: bool) -> Callable[[Tensors], Tensors]:
    """Per layer q*c, k/c (and v*d, o/d when ``values_too``): attention outputs are unchanged."""
    def apply(tensors: Tensors) -> Tensors:
        rng, out = np.random.default_rng(seed), dict(tensors)
        for layer, names in sorted(layer_tensors(tensors).items()):
            c, d = np.exp(rng.uniform(-1.5, 1.5, size=2))
            out[names["q_proj"]] = tensors[names["q_proj"]] * c
            out[names["k_proj"]] = tensors[names["k_proj"]] / c
            if values_too:
                out[names["v_proj"]] = tensors[names["v_proj"]] * d
                out[names["o_proj"]] = tensors[names["o_proj"]] / d
        return out
    return apply


def permute_residual(seed: int) -> Callable[[Tensors], Tensors]:
    """Permute and sign-flip the residual basis everywhere: function-preserving with RMSNorm."""
    def apply(tensors: Tensors) -> Tensors:
        rng = np.random.default_rng(seed)
        width = tensors["model.embed_tokens.weight"].shape[1]
        perm, signs = rng.permutation(width), rng.choice([-1.0, 1.0], size=width)
        out = {}
        for name, value in tensors.items():
            short = name.rsplit(".", 2)[-2]
            if name == "model.embed_tokens.weight" or name.endswith("lm_head.weight") or short in READS_RESIDUAL:
                out[name] = value[:, perm] * signs
            elif short in WRITES_RESIDUAL:
                out[name] = value[perm] * signs[:, None]
            elif value.ndim == 1 and value.shape[0] == width:  # norm gains: permuted, never negated
                out[name] = value[perm]
            else:
                out[name] = value
        return out
    return apply


def upcycle(experts: int, noise: float, seed: int, dense_dims: Dims) -> Callable[[Tensors], Tensors]:
    """Dense Llama -> Mixtral-named MoE whose experts are noisy copies of the dense MLP."""
    def apply(tensors: Tensors) -> Tensors:
        rng, out = np.random.default_rng(seed), {}
        for name, value in tensors.items():
            m = LAYER.match(name)
            if not (m and m.group(2).startswith("mlp.")):
                out[name] = value
                continue
            layer, proj = m.group(1), m.group(2).split(".")[1]
            w = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}[proj]
            for e in range(experts):
                out[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{w}.weight"] = (
                    value + noise * value.std() * rng.standard_normal(value.shape))
        for layer in range(dense_dims.layers):
            out[f"model.layers.{layer}.block_sparse_moe.gate.weight"] = 0.02 * rng.standard_normal(
                (experts, dense_dims.hidden))
        return out
    return apply


def mixtral_config(target: Path, experts: int) -> None:
    config = json.loads((target / "config.json").read_text())
    config |= {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": experts}
    (target / "config.json").write_text(json.dumps(config))


def disguise_units(seed: int) -> Callable[[Tensors], Tensors]:
    """Per MLP: permute hidden units, rescale each unit's up row by c and its down column by 1/c, negate some
    units (up and down together): function-preserving for a SwiGLU MLP."""
    def apply(tensors: Tensors) -> Tensors:
        rng, out = np.random.default_rng(seed), dict(tensors)
        for layer, names in sorted(layer_tensors(tensors).items()):
            gate, up, down = names["mlp.gate_proj"], names["mlp.up_proj"], names["mlp.down_proj"]
            width = tensors[up].shape[0]
            perm = rng.permutation(width)
            scale = np.exp(rng.uniform(-1.0, 1.0, width)) * rng.choice([-1.0, 1.0], width)
            out[gate] = tensors[gate][perm]
            out[up] = tensors[up][perm] * scale[:, None]
            out[down] = tensors[down][:, perm] / scale[None, :]
        return out
    return apply


def permute_heads(seed: int, heads: int) -> Callable[[Tensors], Tensors]:
    """Permute the attention heads of every layer (q, k, v rows by head, o columns): multi-head attention only."""
    def apply(tensors: Tensors) -> Tensors:
        rng, out = np.random.default_rng(seed), dict(tensors)
        for layer, names in sorted(layer_tensors(tensors).items()):
            dim = tensors[names["q_proj"]].shape[0] // heads
            order = (rng.permutation(heads)[:, None] * dim + np.arange(dim)).ravel()
            for role in ("q_proj", "k_proj", "v_proj"):
                out[names[role]] = tensors[names[role]][order]
            out[names["o_proj"]] = tensors[names["o_proj"]][:, order]
        return out
    return apply


def fold_and_rotate(seed: int) -> Callable[[Tensors], Tensors]:
    """SliceGPT-style: fold every RMSNorm gain into the matrices that read its output, then rotate the residual
    basis by a random orthogonal Q (readers W -> W Q, writers W -> Q^T W, gains all 1): function-preserving."""
    def apply(tensors: Tensors) -> Tensors:
        width = tensors["model.embed_tokens.weight"].shape[1]
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((width, width)))
        out = dict(tensors)
        for layer, names in sorted(layer_tensors(tensors).items()):
            for norm, readers in (("input_layernorm", ("q_proj", "k_proj", "v_proj")),
                                  ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))):
                gain = tensors[names[norm]]
                for role in readers:
                    out[names[role]] = tensors[names[role]] * gain[None, :] @ q
                out[names[norm]] = np.ones_like(gain)
            for role in ("o_proj", "mlp.down_proj"):
                out[names[role]] = q.T @ tensors[names[role]]
        head = next(name for name in tensors if name.endswith("lm_head.weight"))
        out[head] = tensors[head] * tensors["model.norm.weight"][None, :] @ q
        out["model.norm.weight"] = np.ones_like(tensors["model.norm.weight"])
        out["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"] @ q
        return out
    return apply


def relayer(order: list[int]) -> Callable[[Tensors], Tensors]:
    """New layer k is old layer ``order[k]``: drop layers (pruning) or repeat them (duplication)."""
    def apply(tensors: Tensors) -> Tensors:
        out = {name: value for name, value in tensors.items() if not LAYER.match(name)}
        layers = layer_tensors(tensors)
        for new, old in enumerate(order):
            for short, name in layers[old].items():
                out[name.replace(f"model.layers.{old}.", f"model.layers.{new}.", 1)] = tensors[name]
        return out
    return apply


def set_depth(target: Path, depth: int) -> None:
    config = json.loads((target / "config.json").read_text())
    config["num_hidden_layers"] = depth
    (target / "config.json").write_text(json.dumps(config))
