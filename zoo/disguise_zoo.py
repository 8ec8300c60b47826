#!/usr/bin/env python
"""Disguised derivatives for the reference zoo: copies hidden by function-preserving
transformations and depth changes (DESIGN.md, Pitfalls; issue 12's table).

    python zoo/disguise_zoo.py --out zoo      # builds the models below that are missing, then labels

Each entry of ``DISGUISE_PLAN`` is a ``disguise:...`` derivation of ``train_zoo.py``'s plan: the
parent's saved float16 weights go through, in this order, an optional depth change (layers
dropped or duplicated), the function-preserving disguises of :mod:`audit.testing.disguise`
(all drawn from one ``numpy.random.default_rng(seed)``), and an optional short fine-tune with
the zoo's recipe (torch).  Function preservation is proved with the float64 numpy forward pass
of :mod:`audit.testing.forward` on the zoo's fixed check batch, before and after the float16
rounding of the saved file, and recorded in ``derivation_params``.

Independent controls need no extra models: every disguised model paired with a model of
another root is an independent pair carrying the same disguises (``pairs.json``: ``label``
independent, ``disguises`` non-empty), which is the false-positive check the benchmark uses.

This module holds the plan and the numpy side; ``train_zoo.py`` does the torch side.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from audit.testing import disguise
from audit.testing.forward import max_logit_difference


def spec(name: str, parent: str, steps: list[str], seed: int, **params) -> dict:
    """A plan entry; its derivation names the steps, e.g. ``disguise:drop-layers+fine-tune``."""
    derivation = "disguise:" + "+".join(steps + ["fine-tune"] * ("frac" in params))
    return dict(name=name, parent=parent, derivation=derivation, params=dict(steps=steps, seed=seed, **params))


FINETUNE = dict(frac=0.1, lr=5e-4)   # the permute-heads-mlp-finetune recipe: 120 steps
HEAL = dict(frac=0.15, lr=1e-3)      # the layer-prune-heal recipe: 180 steps

DISGUISE_PLAN = [
    # layer-pruned copy: 2 of 6 layers dropped (not adjacent), then fine-tuned (healed)
    spec("c3-prune-ft", "c3", ["drop-layers"], 401, drop=[1, 4], shard=1, data_seed=501, **HEAL),
    # residual-basis permutation with sign flips (function-identical)
    spec("a4-resid-perm", "a4", ["residual-permutation"], 402),
    # MLP hidden units permuted + q/k, v/o and up/down rescaled (function-identical)
    spec("b2-units-rescale", "b2", ["unit-permutation", "rescale"], 403),
    # residual + unit + head permutation + rescaling (function-identical); MHA and GQA
    spec("b3-resid-units-heads-rescale", "b3",
         ["residual-permutation", "unit-permutation", "head-permutation", "rescale"], 404),
    spec("g0-resid-units-heads-rescale", "g0",
         ["residual-permutation", "unit-permutation", "head-permutation", "rescale"], 405),
    # pruned copy + residual permutation (grandchild of c3)
    spec("c3-prune-ft-resid-perm", "c3-prune-ft", ["residual-permutation"], 406),
    # fine-tune + residual + unit permutation + rescaling (disguised, then fine-tuned)
    spec("a5-resid-units-rescale-ft", "a5", ["residual-permutation", "unit-permutation", "rescale"], 407,
         shard=0, data_seed=507, **FINETUNE),
    # rotation of the residual basis, norm gains folded (SliceGPT style); alone and fine-tuned
    spec("w2-rotate", "w2", ["residual-rotation"], 408),
    spec("b4-rotate-ft", "b4", ["residual-rotation"], 409, shard=1, data_seed=509, **FINETUNE),
    # depth up-scaling: layers 1 and 2 duplicated (4 -> 6 layers), then fine-tuned
    spec("a3-dup-ft", "a3", ["duplicate-layers"], 410, duplicate=[1, 2], shard=0, data_seed=510, **FINETUNE),
]

# what each disguise step writes into a model's (and a pair's) ``disguises`` list
STEP_DISGUISES = {
    "drop-layers": ["drop-layers"],
    "duplicate-layers": ["duplicate-layers"],
    "residual-permutation": ["residual-permutation", "residual-signs"],
    "residual-rotation": ["norm-folding", "residual-rotation"],
    "unit-permutation": ["unit-permutation"],
    "head-permutation": ["head-permutation"],
    "rescale": ["rescale-qk", "rescale-vo", "rescale-updown"],
}
# the same vocabulary for the derivations of train_zoo.py that are disguises
DERIVATION_DISGUISES = {
    "layer-prune-heal": ["drop-layers"],
    "residual-permutation": ["residual-permutation"],
    "attention-rescale": ["rescale-qk", "rescale-vo"],
    "permute-heads-mlp-finetune": ["head-permutation", "unit-permutation"],
}


def disguises_of(plan_entry: dict) -> list[str]:
    """The disguises one derivation step applies (empty for fine-tunes, LoRA, int8, MoE...)."""
    if (plan_entry["derivation"] or "").startswith("disguise:"):
        return sorted({d for step in plan_entry["params"]["steps"] for d in STEP_DISGUISES[step]})
    return sorted(DERIVATION_DISGUISES.get(plan_entry["derivation"] or "", []))


def apply_plan(tensors: dict, config: dict, params: dict, check_tokens: np.ndarray) -> tuple[dict, dict, dict]:
    """Depth change, then the listed disguises, of float64 ``tensors``.  Returns the new tensors,
    the new HF config and the record: what was drawn plus the function-preservation check of the
    disguises (against the depth-changed model, since a depth change is meant to change it)."""
    rng = np.random.default_rng(params["seed"])
    steps = params["steps"]
    unknown = set(steps) - set(STEP_DISGUISES)
    if unknown:
        raise ValueError(f"unknown disguise steps {sorted(unknown)}")
    record: dict = {}
    current = disguise.Disguised(tensors, config, {})
    if "drop-layers" in steps:
        current = disguise.drop_layers(tensors, config, layers=params["drop"])
    elif "duplicate-layers" in steps:
        current = disguise.duplicate_layers(tensors, config, layers=params["duplicate"])
    record.update(current.record)
    source = current
    for step in steps:
        if step == "residual-permutation":
            current = disguise.permute_residual(current.tensors, current.config, rng=rng)
        elif step == "residual-rotation":
            current = disguise.rotate_residual(current.tensors, current.config, rng=rng)
            current.record.pop("rotation")  # reproducible from the seed; too large for labels.json
        elif step == "unit-permutation":
            current = disguise.permute_units(current.tensors, current.config, rng=rng)
        elif step == "head-permutation":
            current = disguise.permute_heads(current.tensors, current.config, rng=rng)
        elif step == "rescale":
            current = disguise.rescale(current.tensors, current.config, rng=rng)
        else:
            continue
        record.update(current.record)
    if current is not source:
        rounded = {k: v.astype(np.float16).astype(np.float64) for k, v in current.tensors.items()}
        record["disguise_max_logit_diff_float64"] = max_logit_difference(
            (source.tensors, source.config), (current.tensors, current.config), check_tokens)
        record["disguise_max_logit_diff_saved_float16"] = max_logit_difference(
            (source.tensors, source.config), (rounded, current.config), check_tokens)
    return current.tensors, current.config, record


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_zoo

    argv = sys.argv[1:]
    names = [entry["name"] for entry in DISGUISE_PLAN]
    train_zoo.main([*argv, "--only", *names] if "--labels-only" not in argv else argv)


if __name__ == "__main__":
    main()
