"""Every kind of bad input: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from audit.testing.synth import Dims, make_checkpoint
from conftest import raw_safetensors

GOOD_HEADER = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def _write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def case_empty(tmp):
    return _write(tmp / "m.safetensors", b""), "empty file"


def case_too_short(tmp):
    return _write(tmp / "m.safetensors", b"\x01\x00\x00"), "too short"


def case_truncated_data(tmp):
    return _write(tmp / "m.safetensors", raw_safetensors(GOOD_HEADER, b"\x00" * 10)), "truncated"


def case_header_longer_than_file(tmp):
    return _write(tmp / "m.safetensors", raw_safetensors(GOOD_HEADER, b"\x00" * 16, header_len=5000)), "exceeds the file size"


def case_header_absurd(tmp):
    return _write(tmp / "m.safetensors", raw_safetensors(b"{}", header_len=2**62)), "absurd"


def case_header_not_json(tmp):
    return _write(tmp / "m.safetensors", raw_safetensors(b"{this is not json}", b"")), "not valid JSON"


def case_header_not_object(tmp):
    return _write(tmp / "m.safetensors", raw_safetensors(b"[1, 2]", b"")), "not a JSON object"


def case_offsets_outside(tmp):
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]}}
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 16)), "truncated"


def case_offsets_overlap(tmp):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 12)), "overlap"


def case_offsets_hole(tmp):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 16)), "belong to no tensor"


def case_negative_offsets(tmp):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 8)), "begin <= end"


def case_byte_length_mismatch(tmp):
    header = {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}}
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 16)), "needs 8 bytes"


def case_bad_shape(tmp):
    header = {"w": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}}
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 16)), "non-negative integers"


def case_unknown_dtype(tmp):
    header = {"w": {"dtype": "F12", "shape": [2, 2], "data_offsets": [0, 16]}}
    return _write(tmp / "m.safetensors", raw_safetensors(header, b"\x00" * 16)), "unknown dtype"


def case_duplicate_in_header(tmp):
    body = (
        b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
        b' "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    )
    return _write(tmp / "m.safetensors", raw_safetensors(body, b"\x00" * 8)), "duplicate tensor"


def case_duplicate_across_shards(tmp):
    (tmp / "m").mkdir()
    save_file({"w": np.zeros(2, np.float32)}, tmp / "m" / "a.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, tmp / "m" / "b.safetensors")
    return tmp / "m", "duplicate tensor 'w'"


def case_index_missing_tensor(tmp):
    built = make_checkpoint(tmp / "m", "llama", Dims(layers=2), shards=2)
    index_path = built.path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    return built.path, "does not contain it"


def case_index_missing_shard(tmp):
    built = make_checkpoint(tmp / "m", "llama", Dims(layers=2), shards=2)
    (built.path / "model-00002-of-00002.safetensors").unlink()
    return built.path, "does not exist"


def case_index_not_json(tmp):
    built = make_checkpoint(tmp / "m", "llama", Dims(layers=2), shards=2)
    (built.path / "model.safetensors.index.json").write_text("{oops")
    return built.path, "not valid JSON"


def case_index_escapes_directory(tmp):
    built = make_checkpoint(tmp / "m", "llama", Dims(layers=2), shards=2)
    (built.path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../x.safetensors"}}))
    return built.path, "leaves the checkpoint directory"


def case_pickled_bin(tmp):
    path = tmp / "pytorch_model.bin"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    return path, "pickled"


def case_pickled_zip_named_safetensors(tmp):
    path = tmp / "model.safetensors"
    with zipfile.ZipFile(path, "w") as archive:  # what torch.save writes
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    return path, "pickled"


def case_directory_with_only_pickles(tmp):
    (tmp / "m").mkdir()
    (tmp / "m" / "model.pt").write_bytes(pickle.dumps({"w": 1}))
    return tmp / "m", "pickled"


def case_directory_without_weights(tmp):
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("{}")
    return tmp / "m", "no weights found"


def case_missing_path(tmp):
    return tmp / "nope", "no such file"


def case_config_not_json(tmp):
    built = make_checkpoint(tmp / "m", "llama", Dims(layers=1))
    (built.path / "config.json").write_text("not json")
    return built.path, "config.json is not valid JSON"


def case_unrecognised_architecture(tmp):
    save_file({"foo.bar": np.zeros(2, np.float32)}, tmp / "m.safetensors")
    return tmp / "m.safetensors", "--mapping"


def case_non_contiguous_layers(tmp):
    names = {f"model.layers.{i}.self_attn.{p}_proj.weight": np.zeros((2, 2), np.float32) for i in (0, 2) for p in "qkvo"}
    save_file(names, tmp / "m.safetensors")
    return tmp / "m.safetensors", "1 layer(s) have no recognised tensors, e.g. [1]"


CASES = {name.removeprefix("case_"): fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_and_exit_2(tmp_path, run_cli, case):
    path, phrase = CASES[case](tmp_path)
    code, out, err = run_cli("inspect", path)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("audit: error: "), err
    assert phrase in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_tensor_is_named(tmp_path, run_cli, value):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2), dtype="BF16")
    from safetensors.numpy import load_file

    tensors = load_file(built.path / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    poisoned = tensors[name].copy()
    poisoned[3, 5] = value
    tensors[name] = poisoned
    save_file(tensors, built.path / "model.safetensors")
    code, _, _ = run_cli("inspect", built.path)
    assert code == 0  # structure alone is fine
    code, out, err = run_cli("inspect", built.path, "--check-finite")
    assert code == 2 and out == ""
    assert err.strip() == f"audit: error: tensor '{name}' contains 1 NaN/Inf value(s); refusing to compute statistics on it"


@pytest.mark.parametrize("mapping,phrase", [
    ("{", "not valid JSON"),
    ('{"family": "x", "layer": {"attn.query": "a.{layer}"}}', "not a layer role"),
    ('{"family": "x", "layer": {"attn.q": "a.weight"}}', "must contain {layer}"),
    ('{"family": "x", "extends": "nope"}', "extends unknown family"),
    ('{"family": "x", "colour": 1, "global": {"embed": "e"}}', "unknown key"),
])
def test_bad_mapping_file(tmp_path, run_cli, mapping, phrase):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=1))
    (tmp_path / "map.json").write_text(mapping)
    code, _, err = run_cli("inspect", built.path, "--mapping", tmp_path / "map.json")
    assert code == 2 and err.count("\n") == 1 and phrase in err, err


def test_console_script_prints_no_traceback(tmp_path):
    path, _ = case_truncated_data(tmp_path)
    done = subprocess.run([sys.executable, "-m", "audit.cli", "inspect", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
