"""Every class of hostile input from the red-team pass (issue 13, "Inputs"), one test each.

Each must end with one line on stderr and exit status 2, quickly and in
little memory: special files, names too long, deep nesting, huge integers,
lone surrogates, wrong JSON types in every side file, role tensors of the
right size but the wrong rank or layout, huge layer numbers, and a header of
a quarter of a million empty tensors.  Also: the exit code of each outcome,
--verbose, and resolved symlink paths.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pytest
from safetensors.numpy import save_file

from audit import cli
from audit.errors import InputError, NoComparablePopulation
from audit.testing.synth import Dims, make_checkpoint
from conftest import raw_safetensors

DIMS = Dims(layers=2, hidden=16, mlp=32, heads=2, vocab=20)
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" + "0" * 5000  # over int's 4,300-digit conversion limit


@pytest.fixture
def model(tmp_path):
    return make_checkpoint(tmp_path / "m", "llama", DIMS, tokenizer=True).path


def _refused(run_cli, *argv, phrase: str) -> str:
    code, out, err = run_cli(*argv)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("audit: error: ") and "Traceback" not in err, err
    assert phrase in err, err
    assert len(err) < 1000
    return err


# ---- special files and names ----------------------------------------------------------------
@pytest.mark.parametrize("where", ["checkpoint", "mapping", "config"])
def test_a_fifo_is_refused_without_blocking(tmp_path, run_cli, model, where):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    if where == "checkpoint":
        _refused(run_cli, "inspect", fifo, phrase="is a FIFO")
    elif where == "mapping":
        _refused(run_cli, "inspect", model, "--mapping", fifo, phrase="is a FIFO, not a mapping file")
    else:
        (model / "config.json").unlink()
        os.mkfifo(model / "config.json")
        _refused(run_cli, "inspect", model, phrase="is a FIFO")


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_devices_are_refused_as_checkpoints_and_mappings(run_cli, model, device):
    _refused(run_cli, "inspect", device, phrase="is a character device")
    _refused(run_cli, "inspect", model, "--mapping", device, phrase="is a character device, not a mapping file")


def test_a_directory_as_mapping_and_a_symlink_to_dev_zero_as_tokenizer(run_cli, model, tmp_path):
    _refused(run_cli, "inspect", model, "--mapping", tmp_path, phrase="is a directory, not a mapping file")
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to("/dev/zero")
    _refused(run_cli, "compare", model, model, "--methods", "norm", phrase="is a character device")


def test_a_name_over_255_bytes_is_refused(run_cli, model, tmp_path):
    long = tmp_path / ("x" * 256)
    _refused(run_cli, "inspect", long, phrase="over 255 bytes")
    _refused(run_cli, "inspect", model, "--mapping", long, phrase="over 255 bytes")
    _refused(run_cli, "baseline", "list", long, phrase="over 255 bytes")
    _refused(run_cli, "baseline", "add", long, model, "--seed", "1", phrase="over 255 bytes")
    _refused(run_cli, "baseline", "import", tmp_path / "x.bundle", long, phrase="over 255 bytes")


def test_a_keygen_name_over_255_bytes_is_refused(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_PASSPHRASE", "secret")
    _refused(run_cli, "keygen", "--name", "y" * 300, "--org", "o", "--out", tmp_path, phrase="over 255 bytes")


# ---- JSON: nesting, integers, surrogates, types ---------------------------------------------------------
@pytest.mark.parametrize("file", ["header", "config.json", "tokenizer.json", "mapping", "index"])
@pytest.mark.parametrize("value,phrase", [(DEEP, "nested"), (HUGE_INT, "number too long"), ('"\\ud800"', "lone surrogate")])
def test_hostile_json_values_in_every_json_input(tmp_path, run_cli, model, file, value, phrase):
    argv = ["inspect", model]
    if file == "header":
        header = json.dumps({"__metadata__": {"x": "@"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
        (model / "model.safetensors").write_bytes(raw_safetensors(header.replace('"@"', value).encode(), b"\0" * 4))
    elif file == "index":
        (model / "model.safetensors.index.json").write_text('{"weight_map": {"w": @}}'.replace("@", value))
    elif file == "mapping":
        (tmp_path / "map.json").write_text('{"family": "x", "layer": {"attn.q": @}}'.replace("@", value))
        argv += ["--mapping", tmp_path / "map.json"]
    elif file == "config.json":
        (model / "config.json").write_text('{"model_type": "llama", "num_attention_heads": @}'.replace("@", value))
    else:
        (model / "tokenizer.json").write_text('{"model": {"vocab": {"a": @}}}'.replace("@", value))
    _refused(run_cli, *argv, phrase=phrase)


@pytest.mark.parametrize("document,phrase", [
    ({"architectures": 5}, "architectures must be a string or a list of strings, not the number 5"),
    ({"architectures": [None]}, "architectures[0] must be a string"),
    ({"model_type": ["llama"]}, "model_type must be a string, not a list"),
    ({"text_config": []}, "text_config must be a JSON object, not a list"),
    ({"num_attention_heads": "4"}, "num_attention_heads must be a whole number, not a string"),
    ({"hidden_size": 1.5}, "hidden_size must be a whole number"),
    ({"num_key_value_heads": 0}, "num_key_value_heads must be a whole number from 1"),
    ({"text_config": {"head_dim": True}}, "text_config.head_dim must be a whole number, not true/false"),
    ([], "config.json must be a JSON object, not a list"),
])
def test_wrong_types_in_config_name_the_field(run_cli, model, document, phrase):
    (model / "config.json").write_text(json.dumps(document))
    _refused(run_cli, "inspect", model, phrase=phrase)


@pytest.mark.parametrize("document,phrase", [
    ({"model": {"vocab": {"a": "0"}}}, "has id '0'"),
    ({"model": {"vocab": 7}}, "no model.vocab"),
    ({"model": {"vocab": {"a": 0}}, "added_tokens": {"x": 1}}, "added_tokens is not a list"),
    ({"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": 1, "id": 1}]}, "added token without content"),
    ({"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": "b", "id": -1}]}, "has id -1"),
])
def test_wrong_types_in_tokenizer_are_refused(run_cli, model, document, phrase):
    (model / "tokenizer.json").write_text(json.dumps(document))
    _refused(run_cli, "inspect", model, phrase=phrase)  # compare reads it only for methods that use it


@pytest.mark.parametrize("weight_map,phrase", [
    ({"w": 1}, "weight_map['w'] must be a string, not the number 1"),
    ({"w": None}, "weight_map['w'] must be a string, not null"),
    ({"w": ["model.safetensors"]}, "must be a string, not a list"),
    ([], "weight_map must be a JSON object, not a list"),
    ({}, "weight_map must be a non-empty object"),
])
def test_wrong_types_in_the_shard_index(run_cli, model, weight_map, phrase):
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _refused(run_cli, "inspect", model, phrase=phrase)


@pytest.mark.parametrize("mapping,phrase", [
    ([], "mapping must be a JSON object, not a list"),
    ({"family": 3, "layer": {}}, "family must be a string, not the number 3"),
    ({"family": "x", "extends": ["llama"]}, "extends must be a string, not a list"),
    ({"family": "x", "layer_layout": 1}, "layer_layout must be a string"),
    ({"family": "x", "architectures": {"a": 1}}, "architectures must be a string or a list of strings"),
    ({"family": "x", "strip_prefixes": [1]}, "strip_prefixes[0] must be a string"),
    ({"family": "x", "ignore": [None]}, "ignore[0] must be a string"),
    ({"family": "x", "global": ["embed"]}, "global must be a JSON object, not a list"),
    ({"family": "x", "layer": {"attn.q": 5}}, "layer.attn.q must be a string or a list of strings"),
    ({"family": "x", "layer": {"attn.q": []}}, "layer.attn.q must be a template or a non-empty list"),
    ({"family": "x", "expert": {"up": [1]}}, "expert.up[0] must be a string"),
    ({"family": "x", "shared_expert": "up"}, "shared_expert must be a JSON object"),
    ({"family": "x", "fused": []}, "fused must be a JSON object"),
    ({"family": "x", "fused": {"a.{layer}": "qkv"}}, "fused['a.{layer}'] must be a JSON object"),
    ({"family": "x", "fused": {"a.{layer}": {"split": 3, "into": []}}}, "fused['a.{layer}'].split must be a string"),
    ({"family": "x", "fused": {"a.{layer}": {"split": "qkv", "into": 1}}}, "fused['a.{layer}'].into must be"),
    ({"family": "x", "layer": {"attn.q": "x" * 5000 + "{layer}"}}, "at most 4096 characters"),
    ({"family": "x", "ignore": [f"t{i}" for i in range(2001)]}, "at most 2000 name templates"),
])
def test_every_mapping_section_is_type_checked(tmp_path, run_cli, model, mapping, phrase):
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    _refused(run_cli, "inspect", model, "--mapping", tmp_path / "map.json", phrase=phrase)


def test_a_mapping_over_its_size_limit_is_refused_before_parsing(tmp_path, run_cli, model):
    (tmp_path / "map.json").write_bytes(b" " * (4 * 1024 * 1024 + 1))
    _refused(run_cli, "inspect", model, "--mapping", tmp_path / "map.json", phrase="over the 4,194,304-byte limit of a mapping")


# ---- names, layer numbers and tensor counts -----------------------------------------------------
def _layers(tmp, names: list[str]) -> object:
    save_file({n: np.zeros(2, np.float32) for n in names}, tmp / "m.safetensors")
    return tmp / "m.safetensors"


@pytest.mark.parametrize("layer", [str(10**11), str(10**7), "9" * 900])
def test_huge_layer_numbers_fail_fast_with_a_short_line(tmp_path, run_cli, layer):
    # 10^11 used to allocate 9 GB and hang; 10^7 printed an 88 MB line; 900 digits would make int() crawl
    path = _layers(tmp_path, ["model.layers.0.input_layernorm.weight", f"model.layers.{layer}.input_layernorm.weight"])
    err = _refused(run_cli, "inspect", path, phrase="model.layers.")
    assert "is not below the tensor count 2" in err or "digits" in err


def test_a_lone_surrogate_in_a_tensor_name_is_refused(tmp_path, run_cli):
    header = '{"model.layers.0.\\udc80": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    (tmp_path / "m.safetensors").write_bytes(raw_safetensors(header.encode(), b"\0" * 4))
    _refused(run_cli, "inspect", tmp_path / "m.safetensors", phrase="lone surrogate")


def test_an_overlong_tensor_name_is_refused_and_not_printed_whole(tmp_path, run_cli):
    name = "model.layers.0." + "y" * 3_000_000
    header = json.dumps({name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    (tmp_path / "m.safetensors").write_bytes(raw_safetensors(header.encode(), b"\0" * 4))
    _refused(run_cli, "inspect", tmp_path / "m.safetensors", phrase="a name of 3,000,015 characters")


def test_a_quarter_million_empty_tensors_are_refused_before_parsing(tmp_path, run_cli):
    entry = '"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    header = ("{" + ",".join(entry % i for i in range(250_002)) + "}").encode()
    (tmp_path / "m.safetensors").write_bytes(raw_safetensors(header))
    _refused(run_cli, "inspect", tmp_path / "m.safetensors", phrase="more than 250,000 tensors")


# ---- role shapes: right bytes, wrong rank or layout ----------------------------------------------------
@pytest.mark.parametrize("tensor,reshape,phrase", [
    ("model.layers.0.self_attn.q_proj.weight", lambda a: a.reshape(-1), "role 'attn.q' needs a non-empty matrix"),
    ("model.layers.1.mlp.up_proj.weight", lambda a: a.reshape(2, -1, a.shape[1]), "role 'mlp.up' needs a non-empty matrix"),
    ("model.layers.0.input_layernorm.weight", lambda a: a.reshape(4, -1), "role 'norm.attn' needs a non-empty vector"),
    ("model.layers.0.mlp.down_proj.weight", lambda a: np.ascontiguousarray(a.T), "role 'mlp.down') has shape [32, 16]"),
    ("model.layers.1.self_attn.o_proj.weight", lambda a: a.reshape(8, -1), "role 'attn.o') has shape [8, 32]"),
    ("model.embed_tokens.weight", lambda a: a.reshape(-1, 8), "role 'embed') has shape [40, 8]"),
])
def test_role_tensors_of_the_right_size_but_wrong_rank_or_layout(tmp_path, run_cli, tensor, reshape, phrase):
    from safetensors.numpy import load_file

    built = make_checkpoint(tmp_path / "m", "llama", DIMS)
    tensors = load_file(built.path / "model.safetensors")
    tensors[tensor] = reshape(tensors[tensor])
    save_file(tensors, built.path / "model.safetensors")
    err = _refused(run_cli, "inspect", built.path, phrase=phrase)
    assert tensor in err


# ---- exit codes, --verbose, warnings, interrupts --------------------------------------------------------
def _raising(error: BaseException, warn: bool = False):
    def run(args):
        if warn:
            warnings.warn("overflow encountered in reduce", RuntimeWarning)
        raise error
    return run


@pytest.mark.parametrize("error,code,start", [
    (InputError("bad"), 2, "audit: error: bad"),
    (RuntimeError("boom\nsecond line"), 3, "audit: internal error: RuntimeError: boom second line (please report"),
    (NoComparablePopulation("2 comparable pairs; alpha 0.01 needs 99"), 4, "audit: no comparable population: 2 comparable"),
    (KeyboardInterrupt(), 130, "audit: interrupted: "),
])
def test_each_outcome_has_its_exit_code_and_one_line(run_cli, monkeypatch, model, error, code, start):
    warnings.simplefilter("always")  # as a plain interpreter would: print every warning on stderr
    monkeypatch.setattr(warnings, "showwarning", lambda message, *rest, **kw: print(f"Warning: {message}", file=sys.stderr))
    monkeypatch.setattr(cli, "_inspect", _raising(error, warn=True))
    got, out, err = run_cli("inspect", model)
    assert got == code and out == ""
    assert err.count("\n") == 1 and err.startswith(start), err  # the numpy-style warning was not printed first


def test_verbose_reraises_the_original_exception(monkeypatch, model):
    monkeypatch.setattr(cli, "_inspect", _raising(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--verbose", "inspect", str(model)])


def test_a_reader_that_leaves_early_is_not_an_internal_error(model):
    """`audit inspect --json | head -c 10`: the pipe breaks mid-output; no traceback, no "internal error",
    exit 141 as a program killed by SIGPIPE (so `&&` after the pipe does not read it as success)."""
    import subprocess

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    done = subprocess.run([sys.executable, "-m", "audit.cli", "inspect", str(model), "--json"], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 141 and done.stderr == ""


# ---- symlinks: followed, and the resolved path recorded ----------------------------------------------------
def test_a_hub_style_snapshot_of_symlinks_records_resolved_paths(tmp_path, run_cli, model):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(model.iterdir())):
        blob = blobs / f"blob{i}"
        file.rename(blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    code, out, _ = run_cli("inspect", snapshot, "--json")
    assert code == 0
    files = {f["path"]: f["resolved"] for f in json.loads(out)["files"]}
    assert set(files) == {"model.safetensors", "config.json", "tokenizer.json"}
    assert all(os.path.dirname(p) == str(blobs.resolve()) for p in files.values())
    assert files["model.safetensors"] == str((blobs / "blob1").resolve())  # sorted: config, model, tokenizer


def test_the_tensor_count_is_bounded_across_shards(tmp_path, run_cli, monkeypatch):
    from audit.checkpoint import checkpoint

    monkeypatch.setattr(checkpoint, "MAX_MODEL_TENSORS", 30)  # the real bound is 1,000,000: too many files to build here
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=4, hidden=16, mlp=32, heads=2, vocab=20), shards=3)
    _refused(run_cli, "inspect", built.path, phrase="more than 30 tensors across")


def test_compare_refuses_a_bad_tokenizer_when_a_method_reads_it(run_cli, model):
    (model / "tokenizer.json").write_text(json.dumps({"model": {"vocab": 7}}))
    _refused(run_cli, "compare", model, model, "--methods", "robust-match", phrase="no model.vocab")
