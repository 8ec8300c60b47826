"""Fingerprints: deterministic storable bytes, round trips, byte budgets, seeded positions, NaN refusal."""

from __future__ import annotations

import io

import numpy as np
import pytest
from methods_support import build, derive, load_model

from audit.errors import InputError, NonFiniteError
from audit.methods import REGISTRY, Fingerprint, get_method
from audit.testing.synth import Dims

DIMS = Dims(layers=6, hidden=32, mlp=64, heads=4, kv_heads=2, vocab=64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fingerprints")
    return [load_model(build(root / f"m{i}", 40 + i, DIMS)) for i in range(2)]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_bytes_are_deterministic_and_round_trip(models, name, tmp_path):
    method = get_method(name)
    first, again = method.extract(models[0], seed=3), method.extract(models[0], seed=3)
    assert first.to_bytes() == again.to_bytes() and first.digest() == again.digest()
    path = first.save(tmp_path / "fp.npz")
    loaded = Fingerprint.load(path)
    assert loaded.to_bytes() == first.to_bytes()
    other = method.extract(models[1], seed=3)
    assert method.test(loaded, other, seed=0).statistic == method.test(first, other, seed=0).statistic
    with np.load(io.BytesIO(first.to_bytes())) as npz:  # plain NPZ: numpy reads it
        assert set(npz.files) >= set(first.arrays)


@pytest.mark.parametrize("name", ["attn-std", "norm"])
def test_extracting_models_together_gives_each_one_its_own_fingerprint(models, name, monkeypatch):
    """attn-std reduces both models on one set of workers; the default reads them one by one: same bytes."""
    from audit.checkpoint import tensor

    method = get_method(name)
    together = method.extract_each(models, seed=3)
    assert [f.to_bytes() for f in together] == [method.extract(m, seed=3).to_bytes() for m in models]
    monkeypatch.setattr(tensor, "PROCESS_BYTES", 0)  # the same on forked workers
    assert [f.to_bytes() for f in method.extract_each(models, seed=3)] == [f.to_bytes() for f in together]


def test_unreadable_fingerprint_is_an_input_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="unreadable fingerprint"):
        Fingerprint.load(tmp_path / "bad.npz")


def test_positions_depend_on_seed_and_shape_only(models):
    method = get_method("pcs", coordinates=8)  # a subset of the 32 residual coordinates
    a, b = (method.extract(m, seed=9) for m in models)
    assert np.array_equal(a.arrays["coords"], b.arrays["coords"]) and a.arrays["coords"].size == 8
    assert not np.array_equal(a.arrays["coords"], method.extract(models[0], seed=10).arrays["coords"])
    assert "different seeds" in method.mismatch(a, method.extract(models[1], seed=10))
    assert "different parameters" in method.mismatch(a, get_method("pcs").extract(models[1], seed=9))


def test_budgets_bound_the_fingerprint(models):
    width = DIMS.hidden
    small = get_method("neuron-match", rows=16, coordinates=8, budget=16 * 8 * 4 * 2).extract(models[0], 0)
    assert sorted(map(int, small.meta["blocks"])) == [0, 5]  # two layers fit, spread over the depth
    assert small.arrays["up.0.mlp"].shape == (16, 8)
    robust = get_method("robust-match", tokens=20, units=10, budget=20 * width * 4 + 3 * 2 * 10 * width * 4)
    fp = robust.extract(models[0], 0)
    assert len(fp.meta["blocks"]) == 3 and fp.nbytes <= robust.budget and fp.arrays["embed"].shape == (20, width)
    pcs = get_method("pcs", coordinates=16, matrix_budget=16 * 4 * 4).extract(models[0], 0)
    assert all(pcs.arrays[f"w.{label}"].shape == (4, 16) for label in pcs.meta["labels"])


def test_nan_in_a_used_tensor_is_refused(models, tmp_path):
    source = build(tmp_path / "src", 1, DIMS)

    def poison(tensors, config):
        tensors = dict(tensors)
        tensors["model.layers.2.self_attn.q_proj.weight"] = tensors["model.layers.2.self_attn.q_proj.weight"].copy()
        tensors["model.layers.2.self_attn.q_proj.weight"][0] = np.nan
        return tensors

    model = load_model(derive(source, tmp_path / "nan", poison))
    with pytest.raises(NonFiniteError, match="model.layers.2.self_attn.q_proj.weight"):
        get_method("attn-std").extract(model, 0)
    with pytest.raises(NonFiniteError, match="q_proj"):
        get_method("pcs", coordinates=32, matrix_budget=1 << 16).extract(model, 0)
