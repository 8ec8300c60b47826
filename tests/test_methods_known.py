"""Known answers: identical and derived copies, function-preserving transformations, MoE, depths, a hand example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from methods_support import build, derive, finetune, load_model, seeded, upcycle

from audit.methods import REGISTRY, get_method
from audit.testing.disguise import permute_residual, permute_units, rescale
from audit.testing.synth import Dims, make_checkpoint

DIMS = Dims(layers=8, hidden=32, mlp=64, heads=4, kv_heads=2, vocab=64)
EXTREME = -3.5  # log10 p: at the Monte Carlo floor 1/(9999+1) or beyond


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    a = build(root / "a", 1, DIMS)
    paths = {
        "a": a,
        "independent": build(root / "independent", 2, DIMS),
        "finetuned": derive(a, root / "finetuned", finetune(0.5, 7)),
        "units-permuted": derive(a, root / "units-permuted", seeded(permute_units, 8)),
        "residual-permuted": derive(a, root / "residual-permuted", seeded(permute_residual, 9)),
        "qk-rescaled": derive(a, root / "qk-rescaled", seeded(rescale, 10, parts=("qk",))),
        "qkvo-rescaled": derive(a, root / "qkvo-rescaled", seeded(rescale, 10, parts=("qk", "vo"))),
        "shallower": build(root / "shallower", 3, Dims(layers=6, hidden=32, mlp=64, heads=4, kv_heads=2, vocab=64)),
    }
    paths["upcycled"] = derive(a, root / "upcycled", upcycle(4, 0.3, 11))
    paths["upcycled-finetuned"] = derive(paths["upcycled"], root / "upcycled-finetuned", finetune(0.3, 12))
    return {name: load_model(path) for name, path in paths.items()}


def run(zoo, method: str, a: str, b: str, **params):
    m = get_method(method, **params)
    fa, fb = m.extract(zoo[a], seed=0), m.extract(zoo[b], seed=0)
    assert m.mismatch(fa, fb) is None, m.mismatch(fa, fb)
    return m.test(fa, fb, seed=1)


@pytest.mark.parametrize("method", list(REGISTRY))
def test_identical_models_give_extreme_evidence(zoo, method):
    result = run(zoo, method, "a", "a")
    assert result.statistic == pytest.approx(1.0)
    assert result.log10_pvalue <= EXTREME
    if result.null.kind == "monte-carlo-permutation":
        # no draw reaches the observed value: the Monte Carlo floor, or the conservative bound where smaller
        assert result.null.monte_carlo_log10_pvalue == pytest.approx(-4.0)
        assert result.log10_pvalue == pytest.approx(min(-4.0, result.null.bound_log10_pvalue))
        assert result.log10_pvalue >= result.null.min_log10_pvalue
        if result.tail is not None:  # model-based, shown only when the normal fits the draws
            assert result.tail.log10_pvalue < result.log10_pvalue


@pytest.mark.parametrize("method", list(REGISTRY))
def test_fine_tuned_copy_is_detected(zoo, method):
    assert run(zoo, method, "a", "finetuned").log10_pvalue <= EXTREME


def test_hidden_unit_permutation_defeats_neuron_match_not_robust_match(zoo):
    assert run(zoo, "neuron-match", "a", "units-permuted").pvalue > 0.01
    assert run(zoo, "robust-match", "a", "units-permuted").log10_pvalue < -50
    # Subsampled (16 of 64 units per layer, chosen by norm): the permuted copy keeps the same units.
    small = run(zoo, "robust-match", "a", "units-permuted", units=16, budget=64 * 32 * 4 + 8 * 16 * 2 * 32 * 4)
    assert small.details["layers"][0]["units"] == 16 and small.log10_pvalue < -50
    # Attention and norms are untouched, so pcs and norm still see the copy.
    assert run(zoo, "pcs", "a", "units-permuted").log10_pvalue <= EXTREME
    assert run(zoo, "norm", "a", "units-permuted").log10_pvalue <= EXTREME


def test_residual_permutation_with_sign_flips_defeats_all_but_robust_match_and_std(zoo):
    robust = run(zoo, "robust-match", "a", "residual-permuted")
    assert robust.log10_pvalue < -50 and robust.details["alignment_mean_abs_cosine"] == pytest.approx(1.0)
    for method in ("neuron-match", "pcs", "norm"):
        assert run(zoo, method, "a", "residual-permuted").pvalue > 0.01, method
    # A permuted matrix has the same standard deviation (sign flips move only the small mean): attn-std keeps it.
    assert run(zoo, "attn-std", "a", "residual-permuted").statistic == pytest.approx(1.0, abs=1e-2)


def test_attention_rescaling_defeats_attn_std_only(zoo):
    qk = run(zoo, "attn-std", "a", "qk-rescaled").details["per_projection"]
    assert qk["attn.v"] == pytest.approx(1.0) and qk["attn.o"] == pytest.approx(1.0)
    assert qk["attn.q"] < 0.9 and qk["attn.k"] < 0.9
    for method in ("attn-std", "attn-std-detrended"):
        assert run(zoo, method, "a", "qkvo-rescaled").pvalue > 0.01, method
    for method in ("norm", "pcs", "neuron-match", "robust-match"):
        for copy in ("qk-rescaled", "qkvo-rescaled"):
            assert run(zoo, method, "a", copy).log10_pvalue <= EXTREME, (method, copy)


def test_independent_pair_is_not_flagged(zoo):
    for method in REGISTRY:
        assert run(zoo, method, "a", "independent").pvalue > 0.01, method


def test_dense_against_upcycled_moe_names_the_best_expert(zoo):
    for method in ("neuron-match", "robust-match"):
        result = run(zoo, method, "a", "upcycled")
        assert result.log10_pvalue < -50
        layer = result.details["layers"][0]
        assert layer["pairs_compared"] == 4 and layer["best_pair"][0] == "mlp"
        assert layer["best_pair"][1].startswith("expert.")
        # Bonferroni over the four experts: the layer's p is 4x the best pair's.
        assert layer["log10_pvalue"] == pytest.approx(min(0.0, layer["log10_pvalue_best"] + math.log10(4)))
    for method in ("attn-std", "norm", "pcs"):
        assert run(zoo, method, "a", "upcycled").log10_pvalue <= EXTREME, method


def test_experts_against_experts(zoo):
    result = run(zoo, "neuron-match", "upcycled", "upcycled-finetuned")
    assert result.log10_pvalue < -50 and result.details["layers"][0]["pairs_compared"] == 16
    assert run(zoo, "pcs", "upcycled", "upcycled-finetuned").details["per_role_mean"]["expert.0.up"] > 0.9


def test_depth_difference(zoo):
    result = run(zoo, "attn-std", "a", "shallower")
    assert result.details["depths"] == [8, 6] and result.details["resampled"] == "B"
    for method in ("norm", "pcs", "neuron-match", "robust-match"):
        m = get_method(method)
        reason = m.mismatch(m.extract(zoo["a"], 0), m.extract(zoo["shallower"], 0))
        assert reason and "depths differ (8 vs 6" in reason, method


def _pattern(std: float, shape: tuple[int, ...]) -> np.ndarray:
    """Alternating +std, -std: mean 0 and population standard deviation exactly ``std``."""
    n = math.prod(shape)
    return np.where(np.arange(n) % 2 == 0, std, -std).reshape(shape).astype(np.float32)


def _with_profiles(tmp_path, name: str, profiles: dict[str, list[float]]):
    depth = len(next(iter(profiles.values())))
    base = make_checkpoint(tmp_path / f"{name}-base", "llama", Dims(layers=depth, hidden=4, mlp=8, heads=2), seed=0)

    def apply(tensors, config):
        out = dict(tensors)
        for proj, stds in profiles.items():
            for layer, std in enumerate(stds):
                key = f"model.layers.{layer}.self_attn.{proj}_proj.weight"
                out[key] = _pattern(std, tensors[key].shape)
        return out

    return load_model(derive(base.path, tmp_path / name, apply))


def test_attn_std_hand_computed(tmp_path):
    a = _with_profiles(tmp_path, "a", {"q": [1, 2, 4], "k": [1, 2, 3], "v": [1, 2, 3], "o": [1, 3, 2]})
    b = _with_profiles(tmp_path, "b", {"q": [2, 3, 7], "k": [3, 2, 1], "v": [1, 2, 3], "o": [1, 2, 3]})
    method = get_method("attn-std")
    fa, fb = method.extract(a, 0), method.extract(b, 0)
    assert fa.arrays["std"][0] == pytest.approx(np.array([1, 2, 4]) * math.sqrt(16 / 15), abs=1e-12)  # ddof=1
    result = method.test(fa, fb, seed=0)
    # q: deviations (-4/3, -1/3, 5/3) and (-2, -1, 3): r = 8 / sqrt(14/3 * 14) = 4 sqrt(3) / 7.
    # k: exactly reversed, r = -1; v: identical, r = 1; o: (-1, 1, 0) vs (-1, 0, 1), r = 1/2.
    expected = {"attn.q": 4 * math.sqrt(3) / 7, "attn.k": -1.0, "attn.v": 1.0, "attn.o": 0.5}
    for proj, r in expected.items():
        assert abs(result.details["per_projection"][proj] - r) < 1e-9
    assert abs(result.statistic - sum(expected.values()) / 4) < 1e-9
    assert result.null.kind == "exact-permutation" and result.null.size == 6


def test_attn_std_hand_computed_across_depths(tmp_path):
    a = _with_profiles(tmp_path, "a3", {"q": [1, 2, 4], "k": [1, 2, 3], "v": [1, 2, 3], "o": [1, 2, 3]})
    b = _with_profiles(tmp_path, "b5", {"q": [1, 1, 2, 3, 5], "k": [1, 2, 3, 4, 5], "v": [1, 2, 3, 4, 5],
                                        "o": [1, 2, 3, 4, 5]})
    method = get_method("attn-std")
    result = method.test(method.extract(a, 0), method.extract(b, 0), seed=0)
    # A's q on depths 0, 1/2, 1 resampled onto 0, 1/4, ..., 1: (1, 1.5, 2, 3, 4); B's q: (1, 1, 2, 3, 5).
    # Deviations (-1.3, -0.8, -0.3, 0.7, 1.7) and (-1.4, -1.4, -0.4, 0.6, 2.6).
    r = 7.9 / math.sqrt(5.8 * 11.2)
    assert abs(result.details["per_projection"]["attn.q"] - r) < 1e-9
    assert result.details["resampled"] == "A"
    assert abs(result.details["per_projection"]["attn.v"] - 1.0) < 1e-9  # (1, 1.5, 2, 2.5, 3) is linear too
