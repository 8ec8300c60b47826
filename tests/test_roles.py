"""Roles: every family, sharded and single-file, bf16 and f32; real tensor names; user mappings."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from audit import assign_roles, open_checkpoint
from audit.roles.spec import AttentionShape, split_ranges
from audit.testing.synth import Dims, make_checkpoint

FAMILIES = {
    "llama": Dims(layers=3, hidden=32, mlp=80, heads=4, kv_heads=2),
    "mixtral": Dims(layers=2, hidden=32, mlp=48, heads=4, kv_heads=2, experts=4),
    "qwen2-moe": Dims(layers=2, hidden=32, mlp=24, heads=4, experts=6, shared_mlp=40),
    "deepseek-moe": Dims(layers=3, hidden=32, mlp=24, heads=4, experts=4, shared_mlp=48, dense_layers=(0,)),
    "baichuan": Dims(layers=2, hidden=32, mlp=72, heads=4),
    "phi3": Dims(layers=2, hidden=32, mlp=64, heads=8, kv_heads=2),
    "gpt2": Dims(layers=3, hidden=24, mlp=96, heads=3),
    "gpt-neox": Dims(layers=2, hidden=32, mlp=128, heads=4),
    "bert": Dims(layers=2, hidden=32, mlp=128, heads=4),
}
LAYOUTS = {"single-f32": ("F32", 1), "sharded-bf16": ("BF16", 3)}
NARROW = {"F32": np.float32, "BF16": ml_dtypes.bfloat16}


def _slot_view(roles, slot: str):
    kind, *rest = slot.split(".")
    if kind == "global":
        return roles.globals[".".join(rest)]
    layer = roles.layers[int(rest[0])]
    if kind == "layers":
        return layer.roles[".".join(rest[1:])]
    if kind == "shared":
        return layer.shared_expert[".".join(rest[1:])]
    return layer.experts[int(rest[1])][".".join(rest[2:])]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_reports_what_was_built(tmp_path, run_cli, family, layout):
    dims = FAMILIES[family]
    dtype, shards = LAYOUTS[layout]
    built = make_checkpoint(tmp_path / family, family, dims, dtype=dtype, shards=shards, seed=11)
    code, out, err = run_cli("inspect", built.path, "--json")
    assert code == 0, err
    summary = json.loads(out)
    moe = dims.experts > 0
    assert summary["family"] == family and summary["detected_by"] == "config"
    assert summary["depth"] == dims.layers
    assert summary["hidden"] == dims.hidden
    assert summary["heads"] == dims.heads and summary["kv_heads"] == (dims.kv_heads or dims.heads)
    assert summary["parameters"] == built.parameters
    assert summary["dtypes"] == {dtype: summary["tensors"]}
    assert len([f for f in summary["files"] if f["role"] == "weights"]) == shards
    assert summary["unassigned"] == [] and summary["ignored"] == []
    attention = ["attn.q", "attn.k", "attn.v", "attn.o"]
    assert set(attention + ["norm.attn", "norm.mlp"]) <= set(summary["layer_roles"])
    if moe:
        assert summary["experts"] == dims.experts
        assert summary["moe_layers"] == dims.layers - len(dims.dense_layers)
        assert summary["expert_mlp_width"] == dims.mlp
        assert summary["expert_roles"] == ["down", "gate", "up"]
        assert summary["shared_expert_width"] == (dims.shared_mlp or None)
        if dims.dense_layers:
            assert summary["partial_roles"]["mlp.up"] == list(dims.dense_layers)
            assert summary["mlp_width"] == dims.mlp
        else:
            assert "mlp.up" not in summary["layer_roles"] and summary["mlp_width"] is None
    else:
        assert summary["mlp_width"] == dims.mlp and "mlp.up" in summary["layer_roles"]
        assert ("mlp.gate" in summary["layer_roles"]) == (family not in ("gpt2", "gpt-neox", "bert"))
    # Every written value comes back through its role, fused and transposed layouts included.
    with open_checkpoint(built.path) as ck:
        roles = assign_roles(ck)
        for slot, values in built.reference.items():
            view = _slot_view(roles, slot)
            np.testing.assert_array_equal(view.read(), values.astype(NARROW[dtype]).astype(np.float64), err_msg=slot)


def test_grouped_query_attention_shapes(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=1, hidden=64, heads=8, kv_heads=2))
    with open_checkpoint(built.path) as ck:
        layer = assign_roles(ck).layers[0]
        assert layer["attn.q"].shape == (64, 64)
        assert layer["attn.k"].shape == layer["attn.v"].shape == (16, 64)
        assert layer["attn.o"].shape == (64, 64)


def test_phi3_fused_qkv_with_gqa_split_by_head_counts(tmp_path):
    built = make_checkpoint(tmp_path / "m", "phi3", Dims(layers=1, hidden=32, heads=8, kv_heads=2, mlp=40))
    with open_checkpoint(built.path) as ck:
        layer = assign_roles(ck).layers[0]
        assert [layer[r].shape[0] for r in ("attn.q", "attn.k", "attn.v", "mlp.gate", "mlp.up")] == [32, 8, 8, 40, 40]


def test_neox_interleaved_rows_by_hand():
    q, k, v = split_ranges("qkv-per-head", 12, AttentionShape(heads=2), "t")
    assert q == ((0, 2), (6, 8)) and k == ((2, 4), (8, 10)) and v == ((4, 6), (10, 12))


def test_qkv_split_rejects_inconsistent_config():
    from audit.errors import InputError

    with pytest.raises(InputError, match="config.json implies"):
        split_ranges("qkv", 100, AttentionShape(heads=4, kv_heads=4, head_dim=8), "t")


# Tensor names as they appear in the published checkpoints of each family.
REAL_NAMES = {
    "llama": ({"model_type": "qwen2", "num_attention_heads": 2}, {
        "model.embed_tokens.weight": "global.embed",
        "model.layers.0.self_attn.q_proj.weight": "0.attn.q",
        "model.layers.0.self_attn.q_proj.bias": "0.attn.q.bias",
        "model.layers.0.self_attn.k_proj.weight": "0.attn.k",
        "model.layers.0.self_attn.v_proj.weight": "0.attn.v",
        "model.layers.0.self_attn.o_proj.weight": "0.attn.o",
        "model.layers.0.self_attn.q_norm.weight": "0.attn.q_norm",
        "model.layers.0.mlp.gate_proj.weight": "0.mlp.gate",
        "model.layers.0.mlp.up_proj.weight": "0.mlp.up",
        "model.layers.0.mlp.down_proj.weight": "0.mlp.down",
        "model.layers.0.input_layernorm.weight": "0.norm.attn",
        "model.layers.0.post_attention_layernorm.weight": "0.norm.mlp",
        "model.norm.weight": "global.norm.final",
        "lm_head.weight": "global.head",
    }),
    "mixtral": ({"architectures": ["MixtralForCausalLM"]}, {
        "model.layers.0.self_attn.q_proj.weight": "0.attn.q",
        "model.layers.0.block_sparse_moe.gate.weight": "0.moe.router",
        "model.layers.0.block_sparse_moe.experts.0.w1.weight": "0.e0.gate",
        "model.layers.0.block_sparse_moe.experts.0.w3.weight": "0.e0.up",
        "model.layers.0.block_sparse_moe.experts.0.w2.weight": "0.e0.down",
        "model.layers.0.block_sparse_moe.experts.1.w1.weight": "0.e1.gate",
    }),
    "qwen2-moe": ({"model_type": "qwen2_moe"}, {
        "model.layers.0.self_attn.q_proj.weight": "0.attn.q",
        "model.layers.0.mlp.gate.weight": "0.moe.router",
        "model.layers.0.mlp.experts.0.gate_proj.weight": "0.e0.gate",
        "model.layers.0.mlp.experts.0.down_proj.weight": "0.e0.down",
        "model.layers.0.mlp.shared_expert.up_proj.weight": "0.shared.up",
        "model.layers.0.mlp.shared_expert_gate.weight": "0.moe.shared_router",
    }),
    "deepseek-moe": ({"model_type": "deepseek"}, {
        "model.layers.0.mlp.gate_proj.weight": "0.mlp.gate",
        "model.layers.1.self_attn.q_proj.weight": "1.attn.q",
        "model.layers.0.self_attn.q_proj.weight": "0.attn.q",
        "model.layers.1.mlp.gate.weight": "1.moe.router",
        "model.layers.1.mlp.experts.0.up_proj.weight": "1.e0.up",
        "model.layers.1.mlp.shared_experts.down_proj.weight": "1.shared.down",
    }),
    "baichuan": ({"model_type": "baichuan"}, {
        "model.layers.0.self_attn.W_pack.weight": "0.attn.q|0.attn.k|0.attn.v",
        "model.layers.0.self_attn.o_proj.weight": "0.attn.o",
        "model.layers.0.mlp.up_proj.weight": "0.mlp.up",
    }),
    "phi3": ({"model_type": "phi3"}, {
        "model.layers.0.self_attn.qkv_proj.weight": "0.attn.q|0.attn.k|0.attn.v",
        "model.layers.0.mlp.gate_up_proj.weight": "0.mlp.gate|0.mlp.up",
        "model.layers.0.mlp.down_proj.weight": "0.mlp.down",
    }),
    "gpt2": ({"model_type": "gpt2", "n_head": 2}, {
        "wte.weight": "global.embed",
        "wpe.weight": "global.embed.pos",
        "h.0.attn.bias": "ignored",
        "h.0.attn.c_attn.weight": "0.attn.q|0.attn.k|0.attn.v",
        "h.0.attn.c_attn.bias": "0.attn.q.bias|0.attn.k.bias|0.attn.v.bias",
        "h.0.attn.c_proj.weight": "0.attn.o",
        "h.0.mlp.c_fc.weight": "0.mlp.up",
        "h.0.mlp.c_proj.weight": "0.mlp.down",
        "h.0.ln_1.weight": "0.norm.attn",
        "h.0.ln_2.bias": "0.norm.mlp.bias",
        "ln_f.weight": "global.norm.final",
    }),
    "gpt-neox": ({"model_type": "gpt_neox", "num_attention_heads": 2}, {
        "gpt_neox.embed_in.weight": "global.embed",
        "gpt_neox.layers.0.attention.query_key_value.weight": "0.attn.q|0.attn.k|0.attn.v",
        "gpt_neox.layers.0.attention.dense.weight": "0.attn.o",
        "gpt_neox.layers.0.attention.rotary_emb.inv_freq": "ignored",
        "gpt_neox.layers.0.mlp.dense_h_to_4h.weight": "0.mlp.up",
        "gpt_neox.layers.0.mlp.dense_4h_to_h.weight": "0.mlp.down",
        "gpt_neox.layers.0.input_layernorm.weight": "0.norm.attn",
        "gpt_neox.final_layer_norm.weight": "global.norm.final",
        "embed_out.weight": "global.head",
    }),
    "bert": ({"model_type": "bert"}, {
        "bert.embeddings.word_embeddings.weight": "global.embed",
        "bert.embeddings.LayerNorm.gamma": "global.norm.embed",
        "bert.encoder.layer.0.attention.self.query.weight": "0.attn.q",
        "bert.encoder.layer.0.attention.self.key.bias": "0.attn.k.bias",
        "bert.encoder.layer.0.attention.output.dense.weight": "0.attn.o",
        "bert.encoder.layer.0.attention.output.LayerNorm.weight": "0.norm.attn",
        "bert.encoder.layer.0.intermediate.dense.weight": "0.mlp.up",
        "bert.encoder.layer.0.output.dense.weight": "0.mlp.down",
        "bert.encoder.layer.0.output.LayerNorm.beta": "0.norm.mlp.bias",
        "bert.pooler.dense.weight": "ignored",
        "cls.predictions.bias": "ignored",
    }),
}


def _locate(roles, name: str) -> set[str]:
    found = {f"global.{r}" for r, v in roles.globals.items() if v.source.name == name}
    for layer in roles.layers:
        found |= {f"{layer.index}.{r}" for r, v in layer.roles.items() if v.source.name == name}
        found |= {f"{layer.index}.shared.{r}" for r, v in layer.shared_expert.items() if v.source.name == name}
        for e, expert in enumerate(layer.experts):
            found |= {f"{layer.index}.e{e}.{r}" for r, v in expert.items() if v.source.name == name}
    return found | ({"ignored"} if name in roles.ignored else set())


@pytest.mark.parametrize("with_config", [True, False], ids=["config", "names"])
@pytest.mark.parametrize("family", REAL_NAMES)
def test_real_checkpoint_names_map_to_roles(tmp_path, family, with_config):
    config, names = REAL_NAMES[family]
    vector = (".bias", ".beta", "norm.weight", ".gamma", "ln_1.weight", "ln_f.weight", "layernorm.weight", "LayerNorm.weight")

    def shape(name: str, roles: str) -> tuple[int, ...]:  # hidden width 12; fused tensors stack their parts
        rows = 12 * len(roles.split("|"))
        if name.endswith(vector):
            return (rows,)
        return (12, rows) if family == "gpt2" else (rows, 12)  # GPT-2's Conv1D stores [in, out]

    tensors = {name: np.zeros(shape(name, roles), np.float32) for name, roles in names.items()}
    save_file(tensors, tmp_path / "model.safetensors")
    if with_config:
        (tmp_path / "config.json").write_text(json.dumps(config))
    elif family in ("gpt-neox", "llama"):
        pytest.skip("interleaved heads need config.json; llama and qwen2 names are the same family")
    with open_checkpoint(tmp_path) as ck:
        roles = assign_roles(ck)
        assert roles.family == family
        assert roles.detected_by == ("config" if with_config else "names")
        assert roles.unassigned == ()
        for name, expected in names.items():
            assert _locate(roles, name) == set(expected.split("|")), name


def test_user_mapping_for_unknown_architecture(tmp_path, run_cli):
    tensors = {
        "tok.weight": np.ones((10, 8), np.float32),
        **{f"blocks.{i}.wqkv.weight": np.ones((24, 8), np.float32) for i in range(2)},
        **{f"blocks.{i}.ff.w_in.weight": np.ones((16, 8), np.float32) for i in range(2)},
        **{f"blocks.{i}.ff.w_out.weight": np.ones((8, 16), np.float32) for i in range(2)},
        "blocks.0.mystery": np.ones(3, np.float32),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    mapping = {
        "family": "my-arch",
        "global": {"embed": "tok.weight"},
        "layer": {"mlp.up": "blocks.{layer}.ff.w_in.weight", "mlp.down": "blocks.{layer}.ff.w_out.weight"},
        "fused": {"blocks.{layer}.wqkv.weight": {"split": "qkv", "into": ["attn.q", "attn.k", "attn.v"]}},
    }
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    code, _, err = run_cli("inspect", tmp_path, "--json")
    assert code == 2 and "--mapping" in err
    code, out, err = run_cli("inspect", tmp_path, "--json", "--mapping", tmp_path / "map.json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["family"] == "my-arch" and summary["detected_by"] == "mapping"
    assert summary["depth"] == 2 and summary["mlp_width"] == 16 and summary["hidden"] == 8
    assert summary["layer_roles"] == ["attn.q", "attn.k", "attn.v", "mlp.up", "mlp.down"]
    assert summary["unassigned"] == ["blocks.0.mystery"]


def test_user_mapping_extends_a_builtin(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2))
    router = (4, Dims(layers=2).hidden)  # [experts, hidden]: a router reads the residual stream
    extra = {"model.layers.0.adapter.weight": np.zeros(router, np.float32),
             "model.layers.1.adapter.weight": np.zeros(router, np.float32)}
    save_file(extra, built.path / "adapter.safetensors")
    (built.path / "model.safetensors").rename(built.path / "base.safetensors")
    mapping = {"family": "llama-with-router", "extends": "llama", "layer": {"moe.router": "layers.{layer}.adapter.weight"}}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    with open_checkpoint(built.path) as ck:
        roles = assign_roles(ck, tmp_path / "map.json")
        assert roles.family == "llama-with-router"
        assert roles.has("moe.router") and roles.has("attn.q") and roles.unassigned == ()
