"""GGUF input: llama.cpp names, q/k permutation undone, dequantised tensors, embedded vocabulary, bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from audit import open_checkpoint
from audit.auditor import run_audit, write_plan
from audit.checkpoint.gguf_file import unpermute_rows
from audit.checkpoint.vocabulary import shared_tokens
from audit.errors import InputError
from audit.roles import assign_roles
from audit.testing.gguf_export import permute, random_kquant_blocks, write_gguf
from audit.testing.synth import Dims, make_checkpoint

DIMS = Dims(layers=4, hidden=64, mlp=128, heads=4, kv_heads=2, vocab=40)
# Largest |error| of a tensor relative to its largest |value|, per storage type (F32 must be exact).
TOLERANCE = {"F32": 0.0, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 1e-2, "Q4_0": 0.2}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("gguf") / "src", "llama", DIMS, seed=1, tokenizer=True).path


def test_permutation_round_trip():
    rows = np.arange(48 * 3, dtype=np.float32).reshape(48, 3)
    for heads in (1, 2, 4, 6):
        assert np.array_equal(unpermute_rows(permute(rows, heads), heads), rows)
    assert not np.array_equal(permute(rows, 4), rows)
    with pytest.raises(InputError, match="cannot undo"):
        unpermute_rows(rows[:10], 4)


@pytest.mark.parametrize("qtype", list(TOLERANCE))
def test_gguf_reads_back_its_original(original, tmp_path, qtype):
    path = write_gguf(original, tmp_path / f"m-{qtype}.gguf", qtype=qtype)
    with open_checkpoint(original) as a, open_checkpoint(path) as g:
        assert set(a.tensors) == set(g.tensors)
        for name, stored in a.tensors.items():
            want, got = stored.view().read(), g.tensors[name].view().read()
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= TOLERANCE[qtype if want.ndim == 2 else "F32"] * np.abs(want).max(), name
        assert g.gguf.tensor_types["model.layers.0.self_attn.q_proj.weight"] == qtype
        assert g.gguf.tensor_types["model.norm.weight"] == "F32"
        roles = assign_roles(g)
        assert (roles.family, roles.depth) == ("llama", DIMS.layers)
        assert (roles.attention.heads, roles.attention.kv_heads) == (DIMS.heads, DIMS.kv_heads)
        assert g.config["intermediate_size"] == DIMS.mlp and g.config["hidden_size"] == DIMS.hidden
        assert g.vocabulary.kind == "gguf" and g.vocabulary.tokens == a.vocabulary.tokens
        assert len(shared_tokens(a.vocabulary, g.vocabulary)) == DIMS.vocab
        assert list(g.file_hashes()) == [path.name]  # self-contained: no side files read


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0"])
def test_compare_calls_a_gguf_of_the_model_derived(original, tmp_path, qtype):
    path = write_gguf(original, tmp_path / f"m-{qtype}.gguf", qtype=qtype)
    plan = write_plan(tmp_path / "plan.json", methods=["attn-std", "norm", "pcs", "neuron-match"])
    audit = run_audit(original, path, plan=plan)
    results = {o.method.name: o.result for o in audit.comparison.outcomes}
    assert results["attn-std"].statistic > 0.99  # same profiles within the quantisation's error
    assert results["norm"].statistic == pytest.approx(1.0, abs=1e-6)  # norm gains stay F32
    assert results["pcs"].statistic > 0.99
    assert results["neuron-match"].log10_pvalue < -100
    assert audit.verdict.label == "derived"
    other = make_checkpoint(tmp_path / "other", "llama", DIMS, seed=2, tokenizer=True).path
    unrelated = run_audit(other, path, methods=["neuron-match"])
    assert unrelated.verdict.label != "derived"


@pytest.mark.parametrize("qtype,name", [("Q4_K", "model.layers.0.self_attn.q_proj.weight"),
                                        ("Q6_K", "model.layers.1.self_attn.k_proj.weight"),
                                        ("Q6_K", "model.layers.0.mlp.down_proj.weight")])
def test_k_quants_dequantise_with_the_package_and_unpermute(tmp_path, qtype, name):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    dims = Dims(layers=2, hidden=256, mlp=512, heads=4, kv_heads=2, vocab=40)
    source = make_checkpoint(tmp_path / "src", "llama", dims, seed=3).path
    with open_checkpoint(source) as checkpoint:
        rows, cols = checkpoint.tensors[name].shape
    blocks = random_kquant_blocks(rows, cols, qtype, seed=4)
    path = write_gguf(source, tmp_path / "m.gguf", qtype="F16", raw={name: (blocks, qtype)})
    expected = dequantize(blocks, GGMLQuantizationType[qtype]).reshape(rows, cols)
    if "q_proj" in name:
        expected = unpermute_rows(expected, dims.heads)
    elif "k_proj" in name:
        expected = unpermute_rows(expected, dims.kv_heads)
    with open_checkpoint(path) as g:
        assert g.gguf.tensor_types[name] == qtype
        assert np.isfinite(expected).all() and np.abs(expected).max() > 0
        assert np.array_equal(g.tensors[name].view().read(np.float32), expected)


def _cut(data: bytes, keep: int) -> bytes:
    return data[:keep]


@pytest.fixture(scope="module")
def good_gguf(original, tmp_path_factory):
    return write_gguf(original, tmp_path_factory.mktemp("good") / "m.gguf", qtype="Q8_0").read_bytes()


@pytest.mark.parametrize("make,words", [
    (lambda good: _cut(good, len(good) - 100), "truncated or corrupted"),
    (lambda good: _cut(good, 1500), "truncated or corrupted"),
    (lambda good: b"GGUF" + b"\x07" * 100, "GGUF version"),
    (lambda good: good[:4] + struct.pack("<IQQ", 3, 1 << 40, 1 << 40) + good[24:], "more than the"),
    (lambda good: b"GGUF", "not a GGUF file"),
])
def test_bad_gguf_is_one_line_exit_2(good_gguf, tmp_path, run_cli, make, words):
    path = tmp_path / "bad.gguf"
    path.write_bytes(make(good_gguf))
    code, out, err = run_cli("inspect", path)
    assert code == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unsupported_architecture_and_ambiguous_folders(tmp_path, run_cli):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, _, err = run_cli("inspect", tmp_path / "gpt2.gguf")
    assert code == 2 and "GGUF architecture 'gpt2' is not supported" in err
    (tmp_path / "other.gguf").write_bytes((tmp_path / "gpt2.gguf").read_bytes())
    code, _, err = run_cli("inspect", tmp_path)
    assert code == 2 and "holds 2 GGUF files" in err


def test_inspect_a_gguf(original, tmp_path, run_cli):
    path = write_gguf(original, tmp_path / "m.gguf", qtype="Q8_0")
    code, out, err = run_cli("inspect", path)
    assert code == 0, err
    assert "llama" in out and f"{DIMS.vocab} tokens from {path} (gguf" in out
    assert "Q8_0" in out


# MoE: llama.cpp stacks each projection's experts in one 3-D tensor (older files: one tensor per expert).
MOE = {  # four layers: attn-std needs a depth profile
    "mixtral": Dims(layers=4, hidden=64, mlp=64, heads=4, kv_heads=2, vocab=40, experts=4),
    "qwen2-moe": Dims(layers=4, hidden=64, mlp=64, heads=4, kv_heads=2, vocab=40, experts=4, shared_mlp=96),
    "deepseek-moe": Dims(layers=4, hidden=64, mlp=64, heads=4, vocab=40, experts=4, shared_mlp=64, dense_layers=(0,)),
}
MOE_METHODS = ["attn-std", "norm", "pcs", "neuron-match"]


@pytest.fixture(scope="module")
def moe_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    return {family: make_checkpoint(root / family, family, dims, seed=5, tokenizer=True).path for family, dims in MOE.items()}


def _fingerprints(path):
    from audit.methods import Model, get_method

    out = {}
    with open_checkpoint(path) as checkpoint:
        model = Model(assign_roles(checkpoint), checkpoint.vocab, checkpoint.vocabulary)
        for method in MOE_METHODS:
            out[method] = get_method(method).extract(model, 0).arrays
    return out


@pytest.mark.parametrize("family", list(MOE))
@pytest.mark.parametrize("qtype,stacked", [("F32", True), ("Q8_0", True), ("F16", False)])
def test_moe_gguf_maps_experts_to_the_same_roles(moe_models, tmp_path, family, qtype, stacked):
    original, dims = moe_models[family], MOE[family]
    path = write_gguf(original, tmp_path / "moe.gguf", qtype=qtype, stacked_experts=stacked)
    with open_checkpoint(original) as a, open_checkpoint(path) as g:
        assert set(a.tensors) == set(g.tensors)
        for name, stored in a.tensors.items():
            want, got = stored.view().read(), g.tensors[name].view().read()
            assert got.shape == want.shape, name
            assert np.abs(got - want).max() <= TOLERANCE[qtype if want.ndim == 2 and ".gate.weight" not in name
                                                           and "shared_expert_gate" not in name else "F32"] * np.abs(want).max(), name
        ra, rg = assign_roles(a), assign_roles(g)
        assert rg.family == ra.family == family
        assert [len(layer.experts) for layer in rg.layers] == [0 if i in dims.dense_layers else dims.experts
                                                               for i in range(dims.layers)]
        assert [sorted(layer.shared_expert) for layer in rg.layers] == [sorted(layer.shared_expert) for layer in ra.layers]
        assert [sorted(layer.roles) for layer in rg.layers] == [sorted(layer.roles) for layer in ra.layers]
        stored = {g.gguf._stored[name].gguf_name for name in g.tensors}
        assert any(n.endswith(("_exps.weight",) if stacked else (".3.weight",)) for n in stored), sorted(stored)


def test_moe_expert_slices_are_views_into_the_stack(moe_models, tmp_path):
    path = write_gguf(moe_models["qwen2-moe"], tmp_path / "moe.gguf", qtype="F16")
    with open_checkpoint(path) as g:
        stack = g.gguf._stored["model.layers.1.mlp.experts.0.up_proj.weight"]
        slices = [g.tensors[f"model.layers.1.mlp.experts.{e}.up_proj.weight"] for e in range(4)]
        assert [s.entry.begin for s in slices] == [stack.offset + e * stack.nbytes for e in range(4)]
        assert all(s.nbytes == stack.nbytes == MOE["qwen2-moe"].mlp * MOE["qwen2-moe"].hidden * 2 for s in slices)
        third = slices[2].raw()
        assert not third.flags.owndata and not third.flags.writeable  # the file's pages, not a copy of the stack
        assert g.gguf._held is None


@pytest.mark.parametrize("family", list(MOE))
def test_moe_gguf_same_fingerprints_and_compare_calls_it_derived(moe_models, tmp_path, family):
    original = moe_models[family]
    exact = _fingerprints(write_gguf(original, tmp_path / "f32.gguf", qtype="F32"))
    for method, arrays in _fingerprints(original).items():  # F32 stores the same numbers: the same fingerprint
        assert arrays.keys() == exact[method].keys(), method
        for key, values in arrays.items():
            assert np.array_equal(values, exact[method][key]), (method, key)
    quantised = write_gguf(original, tmp_path / "q8.gguf", qtype="Q8_0")
    plan = write_plan(tmp_path / "plan.json", methods=MOE_METHODS)
    audit = run_audit(original, quantised, plan=plan)
    results = {o.method.name: o.result for o in audit.comparison.outcomes}
    assert results["attn-std"].statistic > 0.99
    assert results["norm"].statistic == pytest.approx(1.0, abs=1e-6)  # norm gains stay F32
    assert results["pcs"].statistic > 0.99
    assert results["neuron-match"].log10_pvalue < -100
    assert audit.verdict.label == "derived"


@pytest.fixture(scope="module")
def split_gguf(original, tmp_path_factory):
    """The same model as one GGUF and as a split GGUF of 4 shards (at most 12 tensors each)."""
    root = tmp_path_factory.mktemp("split")
    whole = write_gguf(original, root / "whole.gguf", qtype="Q8_0")
    (root / "parts").mkdir()
    first = write_gguf(original, root / "parts" / "m.gguf", qtype="Q8_0", split_max_tensors=12)
    return whole, first


def test_split_gguf_reads_as_the_whole_from_any_shard_or_its_folder(split_gguf, run_cli):
    whole, first = split_gguf
    shards = sorted(first.parent.iterdir())
    assert first.name == "m-00001-of-00004.gguf" and [p.name for p in shards][-1] == "m-00004-of-00004.gguf"
    with open_checkpoint(whole) as w:
        expected = {name: t.view().read() for name, t in w.tensors.items()}
        types = w.gguf_tensor_types
    for given in (first, shards[2], first.parent):
        with open_checkpoint(given) as s:
            assert set(s.tensors) == set(expected)
            for name, values in expected.items():
                assert np.array_equal(s.tensors[name].view().read(), values), name
            assert s.gguf_tensor_types == types
            assert assign_roles(s).depth == DIMS.layers and s.vocabulary.tokens == w.vocabulary.tokens
            assert list(s.file_hashes()) == [p.name for p in shards]  # every shard hashed, as safetensors shards are
    code, out, err = run_cli("inspect", shards[1])
    assert code == 0 and "Q8_0" in out, err


def _copy_set(first, target):
    target.mkdir()
    for shard in first.parent.iterdir():
        (target / shard.name).write_bytes(shard.read_bytes())
    return target


@pytest.mark.parametrize("damage,words", [
    (lambda d: (d / "m-00002-of-00004.gguf").unlink(), "shard 2 of 4 (m-00002-of-00004.gguf) is missing"),
    (lambda d: (d / "m-00005-of-00004.gguf").write_bytes((d / "m-00004-of-00004.gguf").read_bytes()),
     "m-00005-of-00004.gguf is not one of shards 1..4"),
    (lambda d: (d / "m-00004-of-00004.gguf").rename(d / "m-00004-of-00005.gguf"), "shards of different sets"),
    (lambda d: [(d / f"m-0000{a}-of-00004.gguf").rename(d / f"m-0000{b}-of-00004.gguf") for a, b in ((2, 9), (3, 2), (9, 3))],
     "its metadata says shard 3 of 4, but it is read as shard 2 of 4"),
])
def test_damaged_split_gguf_is_one_line_exit_2(split_gguf, tmp_path, run_cli, damage, words):
    folder = _copy_set(split_gguf[1], tmp_path / "set")
    damage(folder)
    for given in (folder, folder / "m-00001-of-00004.gguf"):
        code, out, err = run_cli("inspect", given)
        assert code == 2 and words in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_renamed_shard_alone_is_refused(split_gguf, tmp_path, run_cli):
    alone = tmp_path / "renamed.gguf"
    alone.write_bytes(split_gguf[1].read_bytes())
    code, out, err = run_cli("inspect", alone)
    assert code == 2 and "metadata says shard 1 of 4" in err and "NAME-0000k-of-0000n.gguf" in err, err


def test_qwen_moe_shared_expert_gate_stored_as_a_vector(moe_models, tmp_path):
    """llama.cpp creates ffn_gate_inp_shexp as a vector; it is read as Hugging Face's [1, hidden] gate."""
    name = "model.layers.2.mlp.shared_expert_gate.weight"
    with open_checkpoint(moe_models["qwen2-moe"]) as a:
        want = a.tensors[name].view().read(np.float32)
    path = write_gguf(moe_models["qwen2-moe"], tmp_path / "m.gguf", qtype="F16", raw={name: (want.reshape(-1), "F32")})
    with open_checkpoint(path) as g:
        assert g.gguf._stored[name].gguf_name == "blk.2.ffn_gate_inp_shexp.weight"
        assert g.tensors[name].shape == (1, MOE["qwen2-moe"].hidden)
        assert np.array_equal(g.tensors[name].view().read(np.float32), want)
        assert "moe.shared_router" in assign_roles(g).layers[2].roles


def test_a_stack_of_absurdly_many_experts_is_refused(tmp_path, run_cli, monkeypatch):
    import gguf

    from audit.checkpoint import gguf_file

    monkeypatch.setattr(gguf_file, "MAX_TENSORS", 100)  # the real limit, hit with a small file
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_expert_count(101)
    writer.add_tensor("blk.0.ffn_up_exps.weight", np.zeros((101, 2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, _, err = run_cli("inspect", tmp_path / "m.gguf")
    assert code == 2 and "stacks 101 experts" in err and "corrupted or hostile" in err, err


def _hand_split(folder, tensors_count):
    """Two shards written one by one, as gguf-split lays them out: metadata in the first only."""
    import gguf

    folder.mkdir()
    for number, (name, shape) in enumerate([("token_embd.weight", (40, 64)), ("output_norm.weight", (64,))]):
        writer = gguf.GGUFWriter(str(folder / f"m-{number + 1:05d}-of-00002.gguf"), "llama")
        if number:
            writer.kv_data[0].pop("general.architecture")  # later shards hold the split keys only
        else:
            writer.add_block_count(1)
            writer.add_head_count(4)
        writer.add_uint16("split.no", number)
        writer.add_uint16("split.count", 2)
        if tensors_count is not None:
            writer.add_int32("split.tensors.count", tensors_count)
        writer.add_tensor(name, np.ones(shape, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return folder


def test_hand_laid_split_and_its_tensor_count(tmp_path, run_cli):
    with open_checkpoint(_hand_split(tmp_path / "good", 2)) as checkpoint:
        assert sorted(checkpoint.tensors) == ["model.embed_tokens.weight", "model.norm.weight"]
        assert checkpoint.config["num_hidden_layers"] == 1
    for count, words in ((None, "without split.tensors.count"), (3, "says 3 tensors in all, but its 2 shards hold 2")):
        code, _, err = run_cli("inspect", _hand_split(tmp_path / f"bad{count}", count))
        assert code == 2 and words in err, err
