"""Ground truth of the shipped reference zoo: labels consistent with lineage, and the
disguised copies compute what their parents compute (numpy forward pass of the saved files)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from audit.testing.forward import logits

ZOO = Path(__file__).resolve().parents[1] / "zoo"
MODELS = json.loads((ZOO / "labels.json").read_text())["models"]
PAIRS = json.loads((ZOO / "pairs.json").read_text())
BY_PAIR = {(p["a"], p["b"]): p for p in PAIRS}


def pair(a: str, b: str) -> dict:
    return BY_PAIR.get((a, b)) or BY_PAIR[b, a]


def test_every_pair_once_and_related_iff_shared_root():
    assert len(PAIRS) == len(BY_PAIR) == len(MODELS) * (len(MODELS) - 1) // 2
    for a, b in itertools.combinations(MODELS, 2):
        related = MODELS[a]["root"] == MODELS[b]["root"]
        assert (pair(a, b)["label"] == "derived") == related, (a, b)
    for name, model in MODELS.items():  # a root is its own root; a child shares its parent's
        assert model["root"] == (name if model["parent"] is None else MODELS[model["parent"]]["root"])
        assert (ZOO / "models" / name / "model.safetensors").is_file()


@pytest.mark.parametrize("a, b, disguises", [
    ("a0", "a1", []),
    ("a1", "a1-cpt-heavy", []),
    ("a4", "a4-resid-perm", ["residual-permutation", "residual-signs"]),
    ("a0", "a4-resid-perm", ["residual-permutation", "residual-signs"]),  # independent control
    ("c3", "c3-prune-ft", ["drop-layers"]),
    ("c3-prune-ft", "c3-prune-ft-resid-perm", ["residual-permutation", "residual-signs"]),
    ("c3", "c3-prune-ft-resid-perm", ["drop-layers", "residual-permutation", "residual-signs"]),
    ("g0-rescale", "g0-resid-units-heads-rescale",  # siblings: both branches from g0
     ["head-permutation", "rescale-qk", "rescale-updown", "rescale-vo", "residual-permutation", "residual-signs",
      "unit-permutation"]),
    ("w2", "w2-rotate", ["norm-folding", "residual-rotation"]),
    ("a3", "a3-dup-ft", ["duplicate-layers"]),
    ("b2-units-rescale", "b4-rotate-ft",
     ["norm-folding", "rescale-qk", "rescale-updown", "rescale-vo", "residual-rotation", "unit-permutation"]),
])
def test_pair_disguises(a, b, disguises):
    assert pair(a, b)["disguises"] == disguises


def test_disguise_records_are_in_the_labels():
    assert MODELS["c3-prune-ft"]["derivation_params"]["layer_map"] == [0, 2, 3, 5]
    assert MODELS["a3-dup-ft"]["derivation_params"]["layer_map"] == [0, 1, 1, 2, 2, 3]
    perm = MODELS["a4-resid-perm"]["derivation_params"]["residual_permutation"]
    assert sorted(perm) == list(range(MODELS["a4"]["hidden"]))
    for name, model in MODELS.items():
        if model["derivation"] and model["derivation"].startswith("disguise:") and "disguise_max_logit_diff_float64" in model["derivation_params"]:
            assert model["derivation_params"]["disguise_max_logit_diff_float64"] < 1e-9, name


def _model(name: str) -> tuple[dict, dict]:
    folder = ZOO / "models" / name
    return load_file(folder / "model.safetensors"), json.loads((folder / "config.json").read_text())


TOKENS = np.arange(60) * 37 % 97  # every id of the vocabulary of 97 is reachable; fixed


@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.get("function_preserving")])
def test_function_preserving_copies_compute_the_parents_logits(name):
    """From the saved float16 files: equal up to float16 rounding of rescaled or rotated weights
    (the exact permutations are equal to float64 summation order)."""
    child, parent = _model(name), _model(MODELS[name]["parent"])
    before = logits(*parent, TOKENS)
    assert np.abs(logits(*child, TOKENS) - before).max() < 1e-3 * np.abs(before).max()
    assert any(not np.array_equal(child[0][k], parent[0].get(k)) for k in child[0])  # the weights did change


@pytest.mark.parametrize("parent, child", [("c3", "c3-prune-ft"), ("c3", "c3-prune-ft-resid-perm"), ("a3", "a3-dup-ft"),
                                           ("c2", "c2-prune-heal")])
def test_layer_map_recovers_the_recorded_depth_change(parent, child):
    """layer-map on the zoo's pruned and duplicated copies finds the layer map the builder recorded."""
    from audit import assign_roles, open_checkpoint
    from audit.methods import Model, get_method

    method = get_method("layer-map")
    prints = []
    for name in (parent, child):
        checkpoint = open_checkpoint(ZOO / "models" / name)
        prints.append(method.extract(Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary), 0))
    result = method.test(*prints, 0)
    name = child  # the depth change is this model's or an ancestor's
    while not {"layer_map", "drop"} & set(MODELS[name]["derivation_params"]):
        name = MODELS[name]["parent"]
    params = MODELS[name]["derivation_params"]
    recorded = params.get("layer_map") or [i for i in range(MODELS[parent]["depth"]) if i not in params["drop"]]
    assert [tuple(p) for p in result.details["layer_map"]["path"]] == [(i, j) for j, i in enumerate(recorded)]
    assert result.log10_pvalue <= -6
