"""The safetensors reader: dtypes, lazy access, views, float64 statistics, hashes."""

from __future__ import annotations

import hashlib
import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from audit import open_checkpoint
from audit.checkpoint import Moments, TensorView
from audit.checkpoint.tensor import NARROW_CHUNK, NARROW_ROW, narrow_sums
from audit.testing.synth import Dims, make_checkpoint

DTYPE_CASES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


@pytest.mark.parametrize("name,dtype", DTYPE_CASES.items())
def test_every_dtype_reads_back_exactly(tmp_path, name, dtype):
    values = (np.arange(24).reshape(4, 6) % 7 - 3).astype(dtype)
    save_file({"t": values}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        stored = ck.tensor("t")
        assert stored.dtype == name
        assert stored.shape == (4, 6)
        np.testing.assert_array_equal(stored.raw(), values)


def test_bf16_statistics_match_float64_reference(tmp_path):
    rng = np.random.default_rng(7)
    # A large offset relative to the spread is where narrow accumulation fails.
    values = (3.0 + 0.01 * rng.standard_normal((1500, 2048))).astype(ml_dtypes.bfloat16)
    save_file({"w": values}, tmp_path / "m.safetensors")
    reference = values.astype(np.float64)
    assert abs(float(values.sum()) - reference.sum()) / reference.sum() > 1e-3  # numpy in bf16 is badly wrong
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        view = ck.tensor("w").view()
        for block in (1 << 22, 10_000, 2048):  # one block, many blocks, one row per block
            moments = Moments()
            for part in view.blocks(max_elements=block):
                moments = moments.merge(Moments.of(part))
            assert moments.count == reference.size
            assert moments.mean == pytest.approx(reference.mean(), rel=1e-12)
            assert moments.std(ddof=1) == pytest.approx(reference.std(ddof=1), rel=1e-6)
        assert view.moments().std(ddof=0) == pytest.approx(reference.std(), rel=1e-6)


def _moments_through_ml_dtypes(view: TensorView) -> Moments:
    """The reduction as it ran before bf16 was read as bits: blocks decoded by ml_dtypes."""
    total = Moments()
    for block in view.blocks(None):
        total = total.merge(Moments.of(block))
    return total


@pytest.mark.parametrize("transposed", [False, True])
def test_bf16_moments_read_as_bits_equal_the_ml_dtypes_path_bit_for_bit(tmp_path, transposed):
    rng = np.random.default_rng(11)
    tensors = {
        "weights": (0.02 * rng.standard_normal((700, 300))).astype(ml_dtypes.bfloat16),  # narrow_sums path
        "gains": (1.0 + 0.01 * rng.standard_normal((40, 50))).astype(ml_dtypes.bfloat16),  # mean dominates: float64 path
        "huge": np.full((4, 8), 3e38, dtype=np.float32).astype(ml_dtypes.bfloat16),  # squares overflow float32
    }
    save_file(tensors, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        for name, values in tensors.items():
            view = TensorView(ck.tensor(name), transposed=transposed)
            assert view.moments() == _moments_through_ml_dtypes(view), name
            assert ck.tensor(name).raw(bits=True).dtype == np.uint16
            np.testing.assert_array_equal(ck.tensor(name).raw(bits=True), values.view(np.uint16))
        assert view.moments().mean == pytest.approx(3e38, rel=1e-2)


def test_bf16_read_as_bits_still_names_a_non_finite_tensor(tmp_path):
    from audit.errors import NonFiniteError

    values = np.ones((64, 64), dtype=ml_dtypes.bfloat16)
    values[3, 5] = np.nan
    save_file({"w": values}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        with pytest.raises(NonFiniteError, match="'w'"):
            ck.tensor("w").view().moments()


def test_moments_of_known_values():
    moments = Moments.of(np.array([1.0, 2.0])).merge(Moments.of(np.array([3.0, 4.0, 5.0])))
    assert (moments.count, moments.mean, moments.m2) == (5, 3.0, 10.0)
    assert moments.var(ddof=1) == 2.5
    assert np.isnan(Moments.of(np.array([1.0])).var(ddof=1))


def test_views_transpose_select_rows_and_sample(tmp_path):
    stored_in_out = np.arange(5 * 12, dtype=np.float32).reshape(5, 12)  # Conv1D: [in=5, out=12]
    save_file({"c": stored_in_out}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "m.safetensors") as ck:
        canonical = stored_in_out.T.astype(np.float64)  # [out, in]
        ranges = ((2, 4), (8, 11))
        view = TensorView(ck.tensor("c"), transposed=True, row_ranges=ranges, part="x")
        expected = np.concatenate([canonical[2:4], canonical[8:11]])
        assert view.shape == (5, 5)
        assert view.name == "c[x]"
        np.testing.assert_array_equal(view.read(), expected)
        np.testing.assert_array_equal(view.read_rows(1, 4), expected[1:4])
        positions = np.array([0, 7, 13, 24])
        np.testing.assert_array_equal(view.sample(positions), expected.reshape(-1)[positions])
        np.testing.assert_array_equal(np.concatenate(list(view.blocks(max_elements=5))), expected)
        plain = TensorView(ck.tensor("c"), row_ranges=((1, 3),))
        np.testing.assert_array_equal(plain.sample(np.array([0, 23])), stored_in_out[1:3].reshape(-1)[[0, 23]])
        with pytest.raises(IndexError):
            view.sample(np.array([25]))


def test_tensors_stay_unread_until_asked(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2))
    with open_checkpoint(built.path) as ck:
        assert all(f._mmap is None for f in ck._weight_files)  # nothing mapped by opening
        ck.tensor("model.layers.0.self_attn.q_proj.weight").view().moments()
        assert ck._weight_files[0]._mmap is not None


def test_sharded_and_single_file_checkpoints_agree(tmp_path):
    single = make_checkpoint(tmp_path / "single", "llama", Dims(layers=3), dtype="BF16", seed=3)
    sharded = make_checkpoint(tmp_path / "sharded", "llama", Dims(layers=3), dtype="BF16", seed=3, shards=3)
    with open_checkpoint(single.path) as a, open_checkpoint(sharded.path) as b:
        assert list(a.tensors) == list(b.tensors)
        assert len({t.file.path for t in b.tensors.values()}) == 3
        for name in a.tensors:
            np.testing.assert_array_equal(a.tensor(name).raw(), b.tensor(name).raw())
        index = json.loads((sharded.path / "model.safetensors.index.json").read_text())
        assert {b.tensor(n).file.path.name for n in index["weight_map"]} == set(index["weight_map"].values())


def test_file_hashes_are_streamed_sha256(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2), shards=2)
    with open_checkpoint(built.path) as ck:
        hashes = ck.file_hashes()
    expected = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in built.path.iterdir() if p.is_file()
    }
    assert hashes == expected
    assert set(hashes) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", "config.json"}


def test_single_file_path_and_index_path_open(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2), shards=2)
    with open_checkpoint(built.path / "model.safetensors.index.json") as ck:
        assert len(ck.tensors) == 2 * 9 + 3
        assert ck.config["model_type"] == "llama"
    single = make_checkpoint(tmp_path / "s", "llama", Dims(layers=2))
    with open_checkpoint(single.path / "model.safetensors") as ck:
        assert ck.config is not None and not ck.warnings


def test_vocab_from_tokenizer_json(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=1))
    tokenizer = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 2, "content": "<s>"}]}
    (built.path / "tokenizer.json").write_text(json.dumps(tokenizer))
    with open_checkpoint(built.path) as ck:
        assert ck.vocab == {"a": 0, "b": 1, "<s>": 2}
        assert "tokenizer.json" in ck.file_hashes()


def test_header_length_that_starts_like_a_pickle_is_still_safetensors(tmp_path):
    from conftest import raw_safetensors

    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (0x0380 - len(header))  # length bytes 80 03 ..., like pickle protocol 3
    path = tmp_path / "m.safetensors"
    path.write_bytes(raw_safetensors(header, np.float32(1.5).tobytes()))
    assert path.read_bytes()[:2] == b"\x80\x03"
    with open_checkpoint(path) as ck:
        assert ck.tensor("w").raw()[0] == 1.5


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
@pytest.mark.parametrize("centre,spread", [(0.0, 0.02), (1.0, 0.1), (3.0, 0.01), (1e30, 1e29)])
def test_narrow_dtype_moments_match_float64(dtype, centre, spread):
    rng = np.random.default_rng(11)
    with np.errstate(over="ignore"):
        values = (centre + spread * rng.standard_normal(200_000)).astype(dtype)
    reference = values.astype(np.float64)
    if not np.all(np.isfinite(reference)):
        pytest.skip("outside this dtype's range")
    moments = Moments.of(values)
    assert moments.mean == pytest.approx(reference.mean(), rel=1e-9, abs=1e-12)
    assert moments.std() == pytest.approx(reference.std(), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2])
@pytest.mark.parametrize("size", [1, 255, 257, NARROW_CHUNK, NARROW_CHUNK + 3, 3 * NARROW_CHUNK - 1])
def test_narrow_sums_within_their_stated_bound(dtype, size):
    rng = np.random.default_rng(size)
    values = (0.001 + 0.02 * rng.standard_normal(size)).astype(dtype)
    exact = values.astype(np.float64)
    total, squares = narrow_sums(values)
    bound = NARROW_ROW * 2.0**-24  # float32 rows of NARROW_ROW terms, float64 across rows
    assert abs(total - exact.sum()) <= bound * np.abs(exact).sum()
    assert abs(squares - np.square(exact).sum()) <= bound * np.square(exact).sum()
    # the bound is the worst case; on weight-like data the error is far smaller
    assert squares == pytest.approx(np.square(exact).sum(), rel=1e-6)


def test_narrow_sums_read_unaligned_memory_and_strided_shapes():
    rng = np.random.default_rng(3)
    raw = (0.02 * rng.standard_normal(4001)).astype(ml_dtypes.bfloat16)
    unaligned = raw[1:]  # 2-byte aligned only, as a tensor after an odd-sized one in a file
    assert unaligned.ctypes.data % 4 == 2
    matrix = unaligned.reshape(40, 100)
    exact = matrix.astype(np.float64)
    assert narrow_sums(matrix) == pytest.approx((exact.sum(), np.square(exact).sum()), rel=1e-7)


def test_narrow_sums_flag_overflow_and_non_finite_values():
    big = np.array([3e38, 1.0], dtype=ml_dtypes.bfloat16)
    assert not np.isfinite(narrow_sums(big)[1])  # the square overflows float32: Moments takes the wide path
    assert Moments.of(big).mean == pytest.approx(big.astype(np.float64).mean())
    assert np.isnan(narrow_sums(np.array([np.nan, 1.0], dtype=np.float16))[0])


def test_a_worker_reuses_the_parsed_file_it_has_until_the_file_changes(tmp_path):
    import os
    import pickle

    from audit.checkpoint.safetensors_file import SafetensorsFile

    save_file({"w": np.ones((4, 4), dtype=np.float32)}, tmp_path / "m.safetensors")
    opened = SafetensorsFile(tmp_path / "m.safetensors")
    assert pickle.loads(pickle.dumps(opened)) is opened  # what a forked worker gets: no second parse
    os.utime(tmp_path / "m.safetensors", ns=(1, 1))
    again = pickle.loads(pickle.dumps(opened))
    assert again is not opened and again.entries == opened.entries  # changed on disk: parsed and checked again
