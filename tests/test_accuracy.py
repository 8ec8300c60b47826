"""Accuracy metrics on hand-made scores with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from audit.testing.accuracy import accuracy_rows, markdown_table, tpr_at_fpr
from audit.zoo import LabelledPair, load_zoo
from audit.errors import InputError
from audit.testing.disguise_table import OTHER, PairOutcome, disguise_markdown, disguise_rows


def test_tpr_at_fpr_counts_thresholds_on_negatives():
    negative = np.arange(100, dtype=float)  # scores 0..99
    positive = np.array([98.5, 99.5, 150.0, 10.0, 96.0])
    assert tpr_at_fpr(positive, negative, 0.0) == 2 / 5  # threshold 99: no negative above it
    assert tpr_at_fpr(positive, negative, 0.01) == 3 / 5  # one false positive allowed: threshold 98
    assert tpr_at_fpr(positive, negative, 0.05) == 4 / 5  # threshold 94


def test_rows_per_method_and_derivation():
    pairs = [LabelledPair("x", f"y{i}", "independent", None) for i in range(20)]
    pairs += [LabelledPair("p", "c1", "derived", "fine-tune"), LabelledPair("p", "c2", "derived", "permute")]
    uniform = list(np.log10((np.arange(20) + 0.5) / 20))
    scores = {
        "perfect": uniform + [-50.0, -40.0],
        "blind": uniform + [math.log10(0.5), None],
    }
    rows = {(r.method, r.group): r for r in accuracy_rows(scores, pairs)}
    assert rows["perfect", "all"].auc == 1.0 and rows["perfect", "all"].tpr_at_fpr_1 == 1.0
    assert rows["perfect", "all"].fpr_at_alpha_05 == 0.05  # 0.025 <= 0.05
    assert rows["perfect", "all"].fpr_at_alpha_01 == 0.0
    assert rows["blind", "fine-tune"].auc == pytest.approx(0.5)
    assert rows["blind", "permute"].not_applicable == 1 and math.isnan(rows["blind", "permute"].auc)
    assert rows["perfect", "all"].ks_pvalue > 0.9
    assert "| perfect | fine-tune | 1 | 20 | 0 | 1.000 |" in markdown_table(list(rows.values()))


def test_load_zoo_validates(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"models": {"a": {}, "b": {}}}))
    (tmp_path / "pairs.json").write_text(json.dumps([{"a": "a", "b": "b", "label": "derived", "derivation": "x"}]))
    zoo = load_zoo(tmp_path)
    assert zoo.pairs[0].derivation == "x" and zoo.model_path("a") == tmp_path / "models" / "a"
    (tmp_path / "pairs.json").write_text(json.dumps([{"a": "a", "b": "zz", "label": "derived"}]))
    with pytest.raises(InputError, match="bad pair"):
        load_zoo(tmp_path)


def test_disguise_rows_count_weakest_pair_and_false_positives():
    outcomes = [
        PairOutcome("derived", ("residual-permutation",), -40.0, "derived"),
        PairOutcome("derived", ("residual-permutation",), -7.5, "derived"),
        PairOutcome("derived", ("drop-layers",), None, "inconclusive"),
        PairOutcome("derived", ("drop-layers",), -3.0, "derived"),
        PairOutcome("independent", ("residual-permutation",), -2.5, "not-rejected"),
        PairOutcome("independent", ("residual-permutation",), -0.3, "derived"),
        PairOutcome("independent", (), None, "not-rejected"),
        PairOutcome("derived", (), -9.0, "derived"),
        PairOutcome("independent", ("drop-layers", "residual-permutation"), -2.1, "derived"),
        PairOutcome("independent", ("rescale-qk",), -0.1, "not-rejected"),
    ]
    rows = {r.disguises: r for r in disguise_rows(outcomes, 0.01)}
    assert list(rows) == [(), ("drop-layers",), ("residual-permutation",), OTHER]
    other = rows[OTHER]
    assert (other.derived, other.independent, other.false_positives, other.exact_below_alpha) == (0, 2, 1, 1)
    perm = rows["residual-permutation",]
    assert (perm.derived, perm.worst_exact_log10_p, perm.best_exact_log10_p, perm.called_derived) == (2, -7.5, -40.0, 2)
    assert (perm.independent, perm.false_positives, perm.exact_below_alpha) == (2, 1, 1)
    drop = rows["drop-layers",]
    assert (drop.worst_exact_log10_p, drop.without_exact, drop.called_derived) == (-3.0, 1, 1)
    table = disguise_markdown(list(rows.values()), 0.01)
    assert "| residual-permutation | 2 | 10^-7.5 (10^-40.0) | 2/2 | 2 | 1/2 | 1/2 |" in table
    assert "| drop-layers | 2 | 10^-3.0 (10^-3.0); none for 1 | 1/2 | 0 | – | – |" in table
    assert "| none (plain derivations) | 1 | 10^-9.0 (10^-9.0) | 1/1 | 1 | 0/1 | 0/1 |" in table
    assert "| other combinations (independent pairs only) | 0 | – | – | 2 | 1/2 | 1/2 |" in table


def test_load_zoo_reads_disguises(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"models": {"a": {}, "b": {}}}))
    pair = {"a": "a", "b": "b", "label": "derived", "disguises": ["rescale-qk", "unit-permutation"]}
    (tmp_path / "pairs.json").write_text(json.dumps([pair]))
    assert load_zoo(tmp_path).pairs[0].disguises == ("rescale-qk", "unit-permutation")
    (tmp_path / "pairs.json").write_text(json.dumps([pair | {"disguises": "rescale-qk"}]))
    with pytest.raises(InputError, match="bad pair"):
        load_zoo(tmp_path)
