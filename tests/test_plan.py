"""The pre-registered analysis plan: canonical, hashed, time-stamped, compared field by field."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from audit.errors import InputError
from audit.evidence.comparability import ComparabilityRule
from audit.evidence.plan import Plan, make_plan

NOW = dt.datetime(2026, 12, 3, 4, 5, 6, 789, tzinfo=dt.timezone.utc)


def _plan(**kw):
    args = {"methods": ["norm", "pcs", "norm"], "alpha": 0.01, "seed": 7, "population": "ab" * 32,
            "population_name": "zoo", "now": NOW} | kw
    return make_plan(**args)


def test_plan_file_is_canonical_and_its_hash_is_the_file_hash(tmp_path):
    plan = _plan()
    assert plan.methods == ("norm", "pcs") and plan.created == "2026-12-03T04:05:06Z"
    path = plan.save(tmp_path / "plan.json")
    assert plan.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    again = Plan.load(path)
    assert again == plan and again.digest == plan.digest
    assert Plan.from_document({**plan.document(), "sha256": plan.digest}) == plan  # as a report embeds it
    assert _plan(seed=8).digest != plan.digest


def test_deviations_name_every_difference():
    plan = _plan()
    same = dict(methods=["norm", "pcs"], alpha=0.01, seed=7, population="ab" * 32, rule=ComparabilityRule())
    assert plan.deviations(**same) == []
    assert plan.deviations(**(same | {"methods": ["pcs"]})) == ["methods pcs instead of the plan's norm, pcs"]
    assert plan.deviations(**(same | {"alpha": 0.05})) == ["alpha 0.05 instead of 0.01"]
    assert plan.deviations(**(same | {"seed": 1})) == ["seed 1 instead of 7"]
    assert plan.deviations(**(same | {"population": None})) == [f"population none instead of {'ab' * 32}"]
    assert plan.deviations(**(same | {"rule": ComparabilityRule(depth_ratio=4.0)})) == ["another comparability rule"]


def test_bad_plans_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="alpha"):
        _plan(alpha=1.5)
    path = _plan().save(tmp_path / "plan.json")
    document = json.loads(path.read_text())
    for broken in ({**document, "format": "x"}, {**document, "alpha": 0}, {**document, "seed": -1},
                   {k: v for k, v in document.items() if k != "methods"}):
        (tmp_path / "bad.json").write_text(json.dumps(broken, sort_keys=True, indent=2) + "\n")
        with pytest.raises(InputError):
            Plan.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Plan.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="cannot read"):
        Plan.load(tmp_path / "missing.json")
    with pytest.raises(InputError, match="character device, not an analysis plan"):
        Plan.load("/dev/zero")  # read through the bounded reader: refused, not read forever


def test_plan_command_writes_the_plan_and_prints_its_hash(tmp_path, run_cli):
    code, out, err = run_cli("plan", "--out", tmp_path / "plan.json", "--methods", "norm", "pcs", "--alpha", "0.05")
    assert code == 0, err
    plan = Plan.load(tmp_path / "plan.json")
    assert f"sha256 {plan.digest}" in out and plan.methods == ("norm", "pcs") and plan.alpha == 0.05
    assert plan.population is None and plan.seed == 0
    code, _, err = run_cli("plan", "--out", tmp_path / "x.json", "--methods", "nope")
    assert code == 2 and "unknown method" in err
