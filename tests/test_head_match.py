"""head-match (issue 12): attention heads matched through every function-preserving disguise, exact fixed-point null."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from methods_support import fixed_point_draws, load_model
from scipy import stats

from audit.methods import Fingerprint, Inapplicable, get_method
from audit.methods.head_match import HeadMatch
from audit.testing import disguise
from audit.testing.synth import Dims, make_checkpoint

ZOO = Path(__file__).resolve().parent.parent / "zoo"
SHAPES = {"mha": Dims(layers=3, hidden=32, mlp=48, heads=4, vocab=60),
          "gqa": Dims(layers=3, hidden=64, mlp=48, heads=8, kv_heads=2, vocab=60)}


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) for k, v in load_file(path / "model.safetensors").items()}


def _write(source: Path, target: Path, tensors: dict[str, np.ndarray], tokenizer: dict | None = None) -> Path:
    target.mkdir(parents=True)
    (target / "config.json").write_text((source / "config.json").read_text())
    (target / "tokenizer.json").write_text(json.dumps(tokenizer) if tokenizer else (source / "tokenizer.json").read_text())
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, target / "model.safetensors")
    return target


@pytest.fixture(scope="module", params=list(SHAPES))
def disguised(request, tmp_path_factory):
    """A random model, its copy with heads permuted and transformed inside, q/k, v/o and up/down rescaled and
    the residual basis permuted with signs, and that copy rotated with the gains folded; the drawn head
    permutations."""
    dims = SHAPES[request.param]
    root = tmp_path_factory.mktemp(f"heads-{request.param}")
    a = make_checkpoint(root / "a", "llama", dims, seed=1, tokenizer=True).path
    config = json.loads((a / "config.json").read_text())
    rng = np.random.default_rng(5)
    heads = disguise.permute_heads(_tensors(a), config, rng=rng)
    tensors = disguise.transform_heads(heads.tensors, config, rng=rng).tensors
    tensors = disguise.rescale(tensors, config, rng=rng).tensors
    permuted = disguise.permute_residual(tensors, config, rng=rng).tensors
    rotated = disguise.rotate_residual(permuted, config, rng=rng).tensors
    models = {"a": load_model(a), "permuted": load_model(_write(a, root / "permuted", permuted)),
              "rotated": load_model(_write(a, root / "rotated", rotated)),
              "independent": load_model(make_checkpoint(root / "independent", "llama", dims, seed=2, tokenizer=True).path)}
    return dims, models, heads.record["head_permutations"]


def _run(models, b: str, method: HeadMatch | None = None):
    method = method or get_method("head-match")
    fa, fb = method.extract(models["a"], 0), method.extract(models[b], 0)
    assert method.mismatch(fa, fb) is None
    return method.test(fa, fb, 0)


@pytest.mark.parametrize("copy", ["permuted", "rotated"])
def test_disguised_copy_recovers_every_head_at_the_exact_floor(disguised, copy):
    dims, models, drawn = disguised
    result = _run(models, copy)
    assert result.null.kind == "exact-permutation"
    assert result.statistic == 1.0
    blocks = result.details["blocks"]
    assert [(b["layer_a"], b["block_a"]) for b in blocks] == [(i, s) for i in range(dims.layers) for s in ("query", "kv")]
    for block in blocks:
        # B's head j holds A's head q[j] (permute_heads moves rows by head block): A's head h is matched to argsort(q)[h]
        moved = np.array(drawn[block["layer_a"]]["q_heads" if block["block_a"] == "query" else "kv_heads"])
        assert block["matching"] == np.argsort(moved).tolist()
        assert block["agreements"] == block["units"]
    # the true floor: the product of 1/n! over the two counts of every layer (n query heads, n kv heads)
    floor = -dims.layers * (math.lgamma(dims.heads + 1) + math.lgamma((dims.kv_heads or dims.heads) + 1)) / math.log(10)
    assert result.null.min_log10_pvalue == pytest.approx(floor)
    assert result.log10_pvalue == pytest.approx(floor) and floor < -8


def test_independent_pair_is_not_significant(disguised):
    _, models, _ = disguised
    result = _run(models, "independent")
    assert result.pvalue > 0.05 and result.statistic < 0.5


def test_fingerprint_round_trip_and_determinism(disguised):
    _, models, _ = disguised
    method = get_method("head-match")
    fa, fb = method.extract(models["a"], 0), method.extract(models["independent"], 0)
    assert fa.digest() == method.extract(models["a"], 0).digest()
    loaded = Fingerprint.from_bytes(fb.to_bytes())
    assert method.test(fa, loaded, 0) == method.test(fa, fb, 0)
    assert method.test(fa, fb, 0) == method.test(fa, fb, 9)  # nothing is resampled


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_independent_iid_pairs_give_super_uniform_p(tmp_path, kv_heads):
    """i.i.d. initialisations satisfy the assumption exactly (grouped-query attention too: k and v are matched
    on kv heads, q and o on query heads): the randomised p-value is uniform and the p-value itself is
    super-uniform (discrete null)."""
    dims = Dims(layers=2, hidden=16, mlp=16, heads=4, kv_heads=kv_heads, vocab=40)
    method = get_method("head-match")
    rng = np.random.default_rng(0)
    pairs = ((method.extract(load_model(make_checkpoint(tmp_path / f"a{seed}", "llama", dims, seed=3000 + 2 * seed, tokenizer=True).path), 0),
              method.extract(load_model(make_checkpoint(tmp_path / f"b{seed}", "llama", dims, seed=3001 + 2 * seed, tokenizer=True).path), 0))
             for seed in range(60))
    pvalues, randomised, counts = fixed_point_draws(method, pairs, rng)
    assert stats.kstest(randomised, "uniform").pvalue > 0.01
    for alpha in (0.05, 0.1, 0.25):  # P(p <= alpha) <= alpha: the count is within binomial(60, alpha)'s 99.9% quantile
        assert sum(p <= alpha for p in pvalues) <= stats.binom.ppf(0.999, 60, alpha), alpha
    assert np.mean(counts) == pytest.approx(1.0, abs=0.25)  # a uniform permutation has one fixed point on average


def test_inapplicable_cases(disguised, tmp_path):
    dims, models, _ = disguised
    method = get_method("head-match")
    fa = method.extract(models["a"], 0)
    # another tokenizer: no token text in common, so no shared sketch columns
    built = make_checkpoint(tmp_path / "source", "llama", dims, seed=4, tokenizer=True).path
    foreign = {"model": {"type": "WordLevel", "vocab": {f"other{i}": i for i in range(dims.vocab)}}}
    other = _write(built, tmp_path / "foreign", _tensors(built), foreign)
    fb = method.extract(load_model(other), 0)
    assert method.mismatch(fa, fb) is None
    with pytest.raises(Inapplicable, match="0 shared tokens; head-match needs at least"):
        method.test(fa, fb, 0)
    # too few tokens for the head dimension
    few = HeadMatch(tokens=dims.head_dim)
    with pytest.raises(Inapplicable, match=f"needs at least {2 * dims.head_dim}"):
        few.test(few.extract(models["a"], 0), few.extract(models["independent"], 0), 0)
    # depths differ: layer i cannot be paired with layer i
    shallow = make_checkpoint(tmp_path / "shallow", "llama", Dims(**{**dims.__dict__, "layers": 2}), seed=5, tokenizer=True).path
    assert "layer-map" in method.mismatch(fa, method.extract(load_model(shallow), 0))
    # head counts unknown without config.json
    bare = make_checkpoint(tmp_path / "bare", "llama", dims, seed=6, config=False).path
    assert "head counts unknown" in method.requirement(load_model(bare))


def _zoo_models():
    pairs = json.loads((ZOO / "pairs.json").read_text())
    names = sorted({p[k] for p in pairs for k in ("a", "b")})
    return pairs, {n: load_model(ZOO / "models" / n) for n in names}


@pytest.mark.skipif(not (ZOO / "pairs.json").exists(), reason="reference zoo not present")
def test_zoo_derived_pairs_found_and_independent_roots_nominal():
    pairs, models = _zoo_models()
    roots = {n for n in models if json.loads((ZOO / "models" / n / "meta.json").read_text()).get("parent") is None}
    method = get_method("head-match")
    fps = {n: method.extract(model, 0) for n, model in models.items()}
    derived, independent = [], []
    for p in pairs:
        a, b = fps[p["a"]], fps[p["b"]]
        if method.mismatch(a, b) is not None:
            continue
        if p["label"] == "derived":
            derived.append(method.test(a, b, 0))
        elif p["a"] in roots and p["b"] in roots:
            independent.append(method.test(a, b, 0).log10_pvalue)
    assert len(derived) == 27  # every derived pair of equal depth, head permutations and rotations included
    assert all(r.log10_pvalue <= -6 and r.statistic == 1.0 for r in derived)
    assert len(independent) == 126
    assert sum(p <= -2 for p in independent) <= 1  # measured: 0 of 126 at alpha 0.01 (7 at 0.05)
