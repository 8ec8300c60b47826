"""Issue 11's function-identical copy: no blind method vetoes the verdict against the shipped zoo."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from audit.auditor import run_audit, write_plan
from audit.evidence import DERIVED, EXPLORATORY
from audit.format.json import audit_doc

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo" / "models"
BASELINE = ROOT / "baselines" / "zoo"
LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight$")


def function_identical_copy(source: Path, target: Path, seed: int) -> Path:
    """Shuffle every layer's MLP hidden units and rescale q/k, v/o and up/down by reciprocal constants."""
    rng = np.random.default_rng(seed)
    tensors = {k: v.astype(np.float64) for k, v in load_file(source / "model.safetensors").items()}
    layers = sorted({int(m.group(1)) for k in tensors if (m := LAYER.match(k))})
    for i in layers:
        name = f"model.layers.{i}.{{}}.weight".format
        units = rng.permutation(tensors[name("mlp.up_proj")].shape[0])
        c_qk, c_vo, c_ud = 2.0 ** rng.uniform(-2, 2, size=3)
        tensors[name("mlp.gate_proj")] = tensors[name("mlp.gate_proj")][units]
        tensors[name("mlp.up_proj")] = tensors[name("mlp.up_proj")][units] * c_ud
        tensors[name("mlp.down_proj")] = tensors[name("mlp.down_proj")][:, units] / c_ud
        tensors[name("self_attn.q_proj")] *= c_qk
        tensors[name("self_attn.k_proj")] /= c_qk
        tensors[name("self_attn.v_proj")] *= c_vo
        tensors[name("self_attn.o_proj")] /= c_vo
    target.mkdir(parents=True)
    for extra in ("config.json", "tokenizer.json"):
        shutil.copy(source / extra, target / extra)
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, target / "model.safetensors")
    return target


@pytest.mark.skipif(not (ZOO / "c0").is_dir() or not BASELINE.is_dir(), reason="the reference zoo is not checked out")
def test_function_identical_copy_is_derived_against_the_zoo(tmp_path):
    parent = ZOO / "c0"
    copy = function_identical_copy(parent, tmp_path / "copy", seed=11)
    plan = write_plan(tmp_path / "plan.json", baseline=BASELINE)
    audit = run_audit(parent, copy, baseline=BASELINE, plan=plan)
    votes = {e.vote.method: e.vote for e in audit.evidence}
    assert audit.verdict.label == DERIVED, audit.verdict.reason
    # norm and pcs see the copy; a method that does not (here attn-std, defeated by the rescaling) cannot veto
    assert {"norm", "pcs"} <= set(audit.verdict.rejected)
    k = len(audit.verdict.deciding)
    assert audit.verdict.log10_pvalue <= np.log10(0.01 / k) + np.log10(k)
    assert all(v.counts for name, v in votes.items() if name in ("norm", "pcs"))


@pytest.mark.skipif(not (ZOO / "c0").is_dir() or not BASELINE.is_dir(), reason="the reference zoo is not checked out")
def test_analysis_off_the_plan_is_exploratory_and_a_plan_for_another_population_is_refused(tmp_path):
    from audit.errors import InputError

    plan = write_plan(tmp_path / "plan.json", baseline=BASELINE, methods=["norm", "pcs"])
    parent, other = ZOO / "c0", ZOO / "c2"
    follows = run_audit(parent, other, baseline=BASELINE, plan=plan)
    assert follows.exploratory == () and follows.verdict.label != EXPLORATORY
    assert [o.method.name for o in follows.comparison.outcomes] == ["norm", "pcs"]
    assert audit_doc(follows)["plan"]["sha256"] == plan.digest
    subset = run_audit(parent, other, baseline=BASELINE, methods=["norm"], plan=plan)
    assert subset.verdict.label == EXPLORATORY and "methods norm instead of" in subset.exploratory[0]
    assert run_audit(parent, other, baseline=BASELINE, alpha=0.05, plan=plan).verdict.label == EXPLORATORY
    assert run_audit(parent, other, baseline=BASELINE, methods=["norm", "pcs"]).exploratory == ("no pre-registered analysis plan",)
    alone = write_plan(tmp_path / "none.json", methods=["norm"])
    with pytest.raises(InputError, match="plan was made for population none"):
        run_audit(parent, other, baseline=BASELINE, plan=alone)
