"""Derived copies of synthetic Llama checkpoints, for the methods' known-answer tests.

A step takes {tensor name: array} (Hugging Face names, ``[out, in]`` layout) and the
HF config and returns a :class:`~audit.testing.disguise.Disguised`, or just the new
tensors when the config stays: the disguises of :mod:`audit.testing.disguise` (made
seeded by :func:`seeded`), plus the two derivations that are not disguises,
:func:`finetune` and :func:`upcycle`.  :func:`derive` writes the result next to the
original's tokenizer.json.
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
from audit.testing.disguise import Disguised
from audit.testing.synth import Dims, make_checkpoint

Tensors = dict[str, np.ndarray]
Step = Callable[[Tensors, dict], "Disguised | Tensors"]
LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight$")


def write_tokenizer(directory: Path, vocab: int) -> None:
    """A WordLevel tokenizer.json whose token strings are t0, t1, ..."""
    data = {"version": "1.0", "model": {"type": "WordLevel", "vocab": {f"t{i}": i for i in range(vocab)}}}
    (directory / "tokenizer.json").write_text(json.dumps(data))


def build(directory: Path, seed: int, dims: Dims, family: str = "llama") -> Path:
    """A random-init checkpoint with a tokenizer."""
    built = make_checkpoint(directory, family, dims, seed=seed)
    write_tokenizer(built.path, dims.vocab)
    return built.path


def derive(source: Path, target: Path, *steps: Step) -> Path:
    """``source`` with ``steps`` applied in turn, written to ``target`` (weights, config.json, tokenizer.json)."""
    target.mkdir(parents=True, exist_ok=True)
    if (source / "tokenizer.json").exists():
        shutil.copy(source / "tokenizer.json", target / "tokenizer.json")
    tensors, config = load_file(source / "model.safetensors"), json.loads((source / "config.json").read_text())
    for step in steps:
        done = step(tensors, config)
        tensors, config = (done.tensors, done.config) if isinstance(done, Disguised) else (done, config)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, target / "model.safetensors")
    (target / "config.json").write_text(json.dumps(config))
    return target


def seeded(disguise: Callable[..., Disguised], seed: int, **options) -> Step:
    """A disguise of :mod:`audit.testing.disguise` drawing from its own generator seeded with ``seed``."""
    return lambda tensors, config: disguise(tensors, config, rng=np.random.default_rng(seed), **options)


def load_model(path: Path) -> Model:
    """Roles and vocabulary; the checkpoint stays open for the test's lifetime (memory-mapped)."""
    checkpoint = open_checkpoint(path)
    return Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary)


def finetune(scale: float, seed: int) -> Step:
    """Add independent noise of ``scale`` times each tensor's std (a fine-tune-like drift)."""
    def apply(tensors: Tensors, config: dict) -> Tensors:
        rng = np.random.default_rng(seed)
        return {k: v + scale * v.std() * rng.standard_normal(v.shape) for k, v in sorted(tensors.items())}
    return apply


def upcycle(experts: int, noise: float, seed: int) -> Step:
    """Dense Llama -> Mixtral whose experts are noisy copies of the dense MLP, with a random router."""
    def apply(tensors: Tensors, config: dict) -> Disguised:
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
        for layer in range(config["num_hidden_layers"]):
            out[f"model.layers.{layer}.block_sparse_moe.gate.weight"] = 0.02 * rng.standard_normal(
                (experts, config["hidden_size"]))
        mixtral = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "num_local_experts": experts}
        return Disguised(out, config | mixtral, {"upcycled_experts": experts})
    return apply


def fixed_point_draws(method, pairs, rng: np.random.Generator) -> tuple[list[float], list[float], list[int]]:
    """Exact p, randomised p (uniform when the null holds) and per-block agreement counts of each pair of
    fingerprints, after checking each reported p against the convolution of its blocks' fixed-point laws."""
    from audit.stats.fixed_points import convolve_log_pmf, fixed_point_log_pmf, log10_tail

    pvalues, randomised, counts = [], [], []
    for fa, fb in pairs:
        result = method.test(fa, fb, 0)
        log_pmf = np.zeros(1)
        for block in result.details["blocks"]:
            log_pmf = convolve_log_pmf(log_pmf, fixed_point_log_pmf(block["units"], block["candidates"]))
            counts.append(block["agreements"])
        k = result.details["agreements"]
        assert abs(result.log10_pvalue - log10_tail(log_pmf, k)) <= 1e-9 * max(1.0, abs(result.log10_pvalue))
        pvalues.append(result.pvalue)
        randomised.append(10 ** log10_tail(log_pmf, k + 1) + rng.uniform() * np.exp(log_pmf[k]))
    return pvalues, randomised, counts
