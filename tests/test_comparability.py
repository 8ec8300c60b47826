"""Comparable populations only, and calibration that can see a shift between groups."""

from __future__ import annotations

import numpy as np
import pytest

from audit.auditor import population_calibration
from audit.baselines.population import PairTable
from audit.errors import InputError
from audit.evidence.calibration import held_out_groups, leave_pair_models_out, member_groups
from audit.evidence.comparability import ComparabilityRule, Shape, apply_rule
from audit.methods import get_method


def test_rule_keeps_neighbouring_depths_and_drops_far_ones_with_reasons():
    rule = ComparabilityRule()
    four, six, deep = Shape("llama", 4, 64, 97), Shape("llama", 6, 64, 97), Shape("llama", 48, 5120, 152064)
    assert rule.reason(four, six) is None
    assert rule.reason(four, deep) == "depth 4 vs 48 (band x1.5)"
    assert rule.reason(Shape("gpt2", 6, 64, 97), six) == "family gpt2, not llama"
    assert rule.reason(Shape("llama", 6, 256, 97), six) == "width 256 vs 64 (band x2)"
    assert rule.needed([deep, deep]) == "independently trained models of 32-72 layers, residual width 2560-10240, family llama"
    assert "two populations" in rule.needed([four, deep])
    assert ComparabilityRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(InputError):
        ComparabilityRule(depth_ratio=0.5)


def test_apply_rule_lists_kept_and_dropped_pairs():
    members = {"x": Shape("llama", 4, 64, 97), "y": Shape("llama", 6, 64, 97), "z": Shape("llama", 24, 64, 97)}
    pairs = [("x", "y"), ("x", "z"), ("y", "z")]
    outcome = apply_rule(ComparabilityRule(), [Shape("llama", 5, 64, 97)] * 2, members, pairs)
    assert outcome.kept == (0,)
    assert outcome.dropped == {"x|z": "z: depth 24 vs 5 (band x1.5)", "y|z": "z: depth 24 vs 5 (band x1.5)"}
    assert outcome.to_dict(pairs)["kept"] == [["x", "y"]]


def _shifted_population(rng, per_group=8, shift=1.5):
    """Two recorded groups; pairs touching group B are shifted up (another recipe, say)."""
    names = [f"a{i}" for i in range(per_group)] + [f"b{i}" for i in range(per_group)]
    pairs = [(p, q) for i, p in enumerate(names) for q in names[i + 1:]]
    values = np.array([rng.normal() + shift * ((p[0] == "b") + (q[0] == "b")) for p, q in pairs])
    architectures = {n: {"depth": 4 if n[0] == "a" else 6, "hidden": 64, "kv_heads": 4, "mlp_width": 176} for n in names}
    return names, pairs, values, architectures


def test_leave_one_group_out_sees_a_shift_that_the_population_cannot_see_in_itself():
    rng = np.random.default_rng(0)
    names, pairs, values, architectures = _shifted_population(rng)
    groups = member_groups(architectures, {n: "zoo" for n in names})
    assert set(groups["shape"].values()) == {"4 layers x 64 wide, 4 kv heads, MLP 176", "6 layers x 64 wide, 4 kv heads, MLP 176"}
    table = PairTable("attn-std", tuple(pairs), values, None, {})
    calibration = population_calibration(get_method("attn-std"), table, 0.05, None, groups)
    assert "leave one group out" in calibration.scheme
    assert not calibration.calibrated and "significantly above" in calibration.reason
    worst = calibration.worst
    assert worst.grouping == "shape" and worst.group.startswith("6 layers") and worst.fpr > 0.3
    assert calibration.min_attainable == pytest.approx(min(g.min_attainable for g in calibration.groups))
    # the old self-check (each pair against the disjoint pairs of the same population) does not see it
    self_check = leave_pair_models_out(values, pairs)
    assert np.mean(self_check <= 0.05) < 0.1


def test_leave_one_group_out_is_calibrated_without_a_shift():
    rng = np.random.default_rng(1)
    names, pairs, values, architectures = _shifted_population(rng, shift=0.0)
    held = held_out_groups(values, pairs, member_groups(architectures, {})["shape"])
    assert [group for group, _, _ in held] == ["4 layers x 64 wide, 4 kv heads, MLP 176",
                                               "6 layers x 64 wide, 4 kv heads, MLP 176"]
    table = PairTable("attn-std", tuple(pairs), values, None, {})
    calibration = population_calibration(get_method("attn-std"), table, 0.05, None,
                                         member_groups(architectures, {}))
    assert calibration.calibrated and calibration.worst.fpr < 0.2


def test_single_group_falls_back_to_the_labelled_self_check():
    rng = np.random.default_rng(2)
    names, pairs, values, architectures = _shifted_population(rng, shift=0.0)
    same = {n: {"depth": 4, "hidden": 64, "kv_heads": 4, "mlp_width": 176} for n in names}
    table = PairTable("attn-std", tuple(pairs), values, None, {})
    calibration = population_calibration(get_method("attn-std"), table, 0.05, None, member_groups(same, {}))
    assert calibration.scheme.startswith("fallback") and calibration.groups == ()


def test_exact_methods_are_calibrated_on_their_own_pvalues_with_their_true_floor():
    rng = np.random.default_rng(3)
    names, pairs, values, architectures = _shifted_population(rng, shift=0.0)
    log10_p = np.log10(rng.uniform(size=len(pairs)))
    table = PairTable("norm", tuple(pairs), values, log10_p, {})
    calibration = population_calibration(get_method("norm"), table, 0.05, -4.0, member_groups(architectures, {}))
    assert calibration.min_attainable == pytest.approx(1e-4) and calibration.n == len(pairs)
    assert all(g.min_attainable == pytest.approx(1e-4) for g in calibration.groups)
