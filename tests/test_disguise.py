"""Known answers for the disguises: every function-preserving one leaves the logits of a
small LLaMA-style model unchanged (float64 forward pass), and the depth changes do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from audit.testing import disguise
from audit.testing.forward import logits, max_logit_difference

TOKENS = np.array([[3, 17, 5, 5, 30, 1, 8, 22, 11, 0], [7, 7, 2, 29, 14, 3, 9, 31, 6, 4]])


def config(*, layers=3, hidden=32, heads=4, kv_heads=2, mlp=48, vocab=40, experts=0, qkv_bias=False):
    return {"num_hidden_layers": layers, "hidden_size": hidden, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "head_dim": hidden // heads, "intermediate_size": mlp,
            "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            **({"num_local_experts": experts, "num_experts_per_tok": 2} if experts else {}),
            "_qkv_bias": qkv_bias}


def random_model(cfg, seed=0, std=0.3):
    """Weights large enough that the logits vary by several units; gains far from one."""
    rng = np.random.default_rng(seed)
    d, m, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def w(*shape):
        return rng.standard_normal(shape) * std

    t = {"model.embed_tokens.weight": w(cfg["vocab_size"], d), "lm_head.weight": w(cfg["vocab_size"], d),
         "model.norm.weight": 1 + 0.5 * rng.standard_normal(d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        t |= {f"{p}.self_attn.q_proj.weight": w(q, d), f"{p}.self_attn.k_proj.weight": w(kv, d),
              f"{p}.self_attn.v_proj.weight": w(kv, d), f"{p}.self_attn.o_proj.weight": w(d, q),
              f"{p}.input_layernorm.weight": 1 + 0.5 * rng.standard_normal(d),
              f"{p}.post_attention_layernorm.weight": 1 + 0.5 * rng.standard_normal(d)}
        if cfg["_qkv_bias"]:
            t |= {f"{p}.self_attn.q_proj.bias": w(q), f"{p}.self_attn.k_proj.bias": w(kv),
                  f"{p}.self_attn.v_proj.bias": w(kv)}
        if cfg.get("num_local_experts"):
            t[f"{p}.block_sparse_moe.gate.weight"] = w(cfg["num_local_experts"], d)
            for e in range(cfg["num_local_experts"]):
                ex = f"{p}.block_sparse_moe.experts.{e}"
                t |= {f"{ex}.w1.weight": w(m, d), f"{ex}.w3.weight": w(m, d), f"{ex}.w2.weight": w(d, m)}
        else:
            t |= {f"{p}.mlp.gate_proj.weight": w(m, d), f"{p}.mlp.up_proj.weight": w(m, d),
                  f"{p}.mlp.down_proj.weight": w(d, m)}
    return t


PRESERVING = {
    "residual-permutation": lambda t, c, rng: disguise.permute_residual(t, c, rng=rng),
    "residual-rotation": lambda t, c, rng: disguise.rotate_residual(t, c, rng=rng),
    "norm-folding": lambda t, c, rng: disguise.fold_norms(t, c),
    "unit-permutation": lambda t, c, rng: disguise.permute_units(t, c, rng=rng),
    "unit-permutation-scaled": lambda t, c, rng: disguise.permute_units(t, c, rng=rng, scale=True),
    "head-permutation": lambda t, c, rng: disguise.permute_heads(t, c, rng=rng),
    "head-transform": lambda t, c, rng: disguise.transform_heads(t, c, rng=rng),
    "rescale": lambda t, c, rng: disguise.rescale(t, c, rng=rng),
    "zero-output-duplicate": lambda t, c, rng: disguise.duplicate_layers(t, c, layers=[0, 2], zero_output=True),
}
SHAPES = {
    "gqa": config(),
    "mha-qkv-bias": config(kv_heads=4, qkv_bias=True),
    "mixtral": config(experts=3),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", list(PRESERVING))
def test_function_preserving_disguises_keep_the_logits(name, shape):
    cfg = SHAPES[shape]
    tensors = random_model(cfg)
    before = logits(tensors, cfg, TOKENS[0])
    assert np.ptp(before) > 5  # a model whose logits vary, so equality means something
    out = PRESERVING[name](tensors, cfg, np.random.default_rng(7))
    assert max_logit_difference((tensors, cfg), (out.tensors, out.config), TOKENS) < 1e-9 * np.abs(before).max()
    if name not in ("norm-folding", "zero-output-duplicate"):  # the weights did change
        assert any(not np.allclose(out.tensors[k], v) for k, v in tensors.items())


def test_all_disguises_composed_keep_the_logits():
    cfg = SHAPES["gqa"]
    tensors = random_model(cfg, seed=3)
    rng = np.random.default_rng(11)
    out = disguise.Disguised(tensors, cfg, {})
    for name in ("unit-permutation", "head-permutation", "rescale", "residual-permutation", "residual-rotation"):
        out = PRESERVING[name](out.tensors, out.config, rng)
    assert max_logit_difference((tensors, cfg), (out.tensors, out.config), TOKENS) < 1e-9 * np.abs(logits(tensors, cfg, TOKENS[0])).max()


def test_breaking_the_rules_changes_the_logits():
    """The checks above can fail: a residual permutation that forgets the norm gains, or
    a unit permutation that forgets down_proj, changes the function."""
    cfg = SHAPES["gqa"]
    tensors = random_model(cfg)
    out = disguise.permute_residual(tensors, cfg, rng=np.random.default_rng(1), signs=False)
    broken = dict(out.tensors)
    for name in tensors:
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            broken[name] = tensors[name]
    assert max_logit_difference((tensors, cfg), (broken, cfg), TOKENS) > 0.1
    units = disguise.permute_units(tensors, cfg, rng=np.random.default_rng(1))
    broken = dict(units.tensors, **{k: v for k, v in tensors.items() if "down_proj" in k})
    assert max_logit_difference((tensors, cfg), (broken, cfg), TOKENS) > 0.1
    # rotation without folding the (non-unit) gains is not function-preserving
    rot = disguise.rotate_residual(tensors, cfg, rng=np.random.default_rng(2))
    unfolded = disguise._basis_change(tensors, np.array(rot.record["rotation"]), None)
    assert max_logit_difference((tensors, cfg), (unfolded, cfg), TOKENS) > 0.1


def test_records_are_the_ground_truth():
    cfg = SHAPES["gqa"]
    tensors = random_model(cfg)
    out = disguise.permute_residual(tensors, cfg, rng=np.random.default_rng(5))
    perm, signs = np.array(out.record["residual_permutation"]), np.array(out.record["residual_signs"])
    emb = tensors["model.embed_tokens.weight"]
    np.testing.assert_array_equal(out.tensors["model.embed_tokens.weight"], emb[:, perm] * signs)
    np.testing.assert_array_equal(out.tensors["model.norm.weight"], tensors["model.norm.weight"][perm])
    heads = disguise.permute_heads(tensors, cfg, rng=np.random.default_rng(5)).record["head_permutations"]
    for layer in heads:  # query heads stay with their kv group (group size 2)
        assert [q // 2 for q in layer["q_heads"]] == [kv for kv in layer["kv_heads"] for _ in range(2)]
    rot = disguise.rotate_residual(tensors, cfg, rng=np.random.default_rng(5))
    q = np.array(rot.record["rotation"])
    np.testing.assert_allclose(q @ q.T, np.eye(32), atol=1e-12)
    assert all(np.all(v == 1) for k, v in rot.tensors.items() if k.endswith("norm.weight"))


def test_same_rng_seed_same_disguise():
    cfg = SHAPES["gqa"]
    tensors = random_model(cfg)
    for name, make in PRESERVING.items():
        a, b = make(tensors, cfg, np.random.default_rng(9)), make(tensors, cfg, np.random.default_rng(9))
        assert a.record == b.record, name
        assert all(np.array_equal(a.tensors[k], b.tensors[k]) for k in a.tensors), name


def test_drop_and_duplicate_layers():
    cfg = config(layers=4)
    tensors = random_model(cfg)
    dropped = disguise.drop_layers(tensors, cfg, layers=[1, 2])
    assert dropped.config["num_hidden_layers"] == 2 and dropped.record["layer_map"] == [0, 3]
    np.testing.assert_array_equal(dropped.tensors["model.layers.1.mlp.up_proj.weight"],
                                  tensors["model.layers.3.mlp.up_proj.weight"])
    assert not any(k.startswith(("model.layers.2.", "model.layers.3.")) for k in dropped.tensors)
    # dropping really removes computation: the logits move
    assert max_logit_difference((tensors, cfg), (dropped.tensors, dropped.config), TOKENS) > 0.1
    twice = disguise.duplicate_layers(tensors, cfg, layers=[1])
    assert twice.config["num_hidden_layers"] == 5 and twice.record["layer_map"] == [0, 1, 1, 2, 3]
    np.testing.assert_array_equal(twice.tensors["model.layers.2.self_attn.o_proj.weight"],
                                  tensors["model.layers.1.self_attn.o_proj.weight"])
    assert max_logit_difference((tensors, cfg), (twice.tensors, twice.config), TOKENS) > 0.1
    with pytest.raises(ValueError, match="layer map"):
        disguise.remap_layers(tensors, cfg, layer_map=[0, 4])


def test_unknown_tensors_are_refused():
    cfg = SHAPES["gqa"]
    tensors = random_model(cfg) | {"model.layers.0.self_attn.q_norm.weight": np.ones(8)}
    with pytest.raises(ValueError, match="unsupported tensor"):
        disguise.permute_residual(tensors, cfg, rng=np.random.default_rng(0))
