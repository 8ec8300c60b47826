"""Every method on every built-in family: it applies, or it says why; identical copies are always detected."""

from __future__ import annotations

import pytest
from methods_support import load_model, write_tokenizer

from audit.methods import REGISTRY, get_method
from audit.testing.synth import Dims, make_checkpoint

FAMILIES = {
    "llama": Dims(layers=4, hidden=16, mlp=40, heads=4, kv_heads=2, vocab=40),
    "mixtral": Dims(layers=4, hidden=16, mlp=24, heads=4, kv_heads=2, experts=3, vocab=40),
    "qwen2-moe": Dims(layers=4, hidden=16, mlp=12, heads=4, experts=4, shared_mlp=24, vocab=40),
    "deepseek-moe": Dims(layers=4, hidden=16, mlp=12, heads=4, experts=3, shared_mlp=24, dense_layers=(0,), vocab=40),
    "baichuan": Dims(layers=4, hidden=16, mlp=40, heads=4, vocab=40),
    "phi3": Dims(layers=4, hidden=16, mlp=32, heads=4, kv_heads=2, vocab=40),
    "gpt2": Dims(layers=4, hidden=12, mlp=48, heads=3, vocab=40),
    "gpt-neox": Dims(layers=4, hidden=16, mlp=64, heads=4, vocab=40),
    "bert": Dims(layers=4, hidden=16, mlp=64, heads=4, vocab=40),
}
NOT_GATED = {"gpt2", "gpt-neox", "bert"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_applies_or_says_why(tmp_path, family):
    built = make_checkpoint(tmp_path / family, family, FAMILIES[family], dtype="BF16", seed=4)
    write_tokenizer(built.path, FAMILIES[family].vocab)
    model = load_model(built.path)
    for name in REGISTRY:
        method = get_method(name)
        reason = method.requirement(model)
        if name == "robust-match" and family in NOT_GATED:
            assert reason == "no gated MLP (gate and up projections)"
            continue
        assert reason is None, (name, reason)
        fp = method.extract(model, seed=0)
        result = method.test(fp, fp, seed=0)
        # As extreme as the test can be: 4 layers give a layer-permutation test only 4! orderings.
        assert result.log10_pvalue <= max(-3.0, result.null.min_log10_pvalue) + 1e-9, (name, result.log10_pvalue)
        assert result.statistic == pytest.approx(1.0), name
