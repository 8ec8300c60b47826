"""Baseline populations and the audit against them, on synthetic independent models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.auditor import run_audit, write_plan
from audit.baselines import Population
from audit.errors import InputError
from audit.evidence import DERIVED, EXPLORATORY, NOT_REJECTED
from audit.evidence.population import effective_pairs
from audit.format.json import audit_doc, dumps

from conftest import WORLD_MEMBERS as MEMBERS


def test_population_folder_holds_small_fingerprints_and_metadata(world):
    root, paths, _, _ = world
    population = Population.open(root / "population")
    assert population.name == "synthetic" and population.seed == 3 and len(population.members) == MEMBERS
    member = population.members["m0"]
    assert member.source == "audit.testing.synth" and member.licence == "CC0"
    assert member.architecture["depth"] == 4 and member.architecture["hidden"] == 32
    assert set(member.files) == {"model.safetensors", "config.json", "tokenizer.json"}
    for kind in member.fingerprints:
        assert (root / "population" / "models" / "m0" / f"{kind}.npz").stat().st_size < 200_000
    pairs = json.loads((root / "population" / "pairs.json").read_text())
    assert len(pairs["methods"]["attn-std"]["pairs"]) == MEMBERS * (MEMBERS - 1) // 2


def test_adding_twice_or_bad_names_is_refused(world):
    root, paths, _, _ = world
    population = Population.open(root / "population")
    with pytest.raises(InputError, match="already in population"):
        population.add([paths[0]], names=["m0"])
    with pytest.raises(InputError, match="same weights as member 'm1'"):
        population.add([paths[1]], names=["again"])
    with pytest.raises(InputError, match="must be letters"):
        population.add([paths[1]], names=["bad name!"])


def test_member_suspect_is_left_out_of_its_own_null_and_derivation_is_found(world, tmp_path):
    root, paths, suspect, _ = world
    plan = write_plan(tmp_path / "plan.json", baseline=root / "population")
    audit = run_audit(paths[0], suspect, baseline=root / "population", plan=plan)
    doc = audit_doc(audit)
    assert doc["verdict"]["label"] == DERIVED and doc["plan"]["sha256"] == plan.digest and doc["exploratory"] is None
    assert doc["verdict"]["body_only"]["label"] == DERIVED
    assert doc["baseline"]["size"] == MEMBERS
    by_name = {m["name"]: m for m in doc["methods"]}
    remaining = (MEMBERS - 1) * (MEMBERS - 2) // 2  # pairs without m0
    for method in ("norm", "pcs"):
        population = by_name[method]["population"]
        assert population["n_pairs"] == remaining and population["n_models"] == MEMBERS - 1
        assert population["effective_pairs"] <= remaining
        assert population["pvalue"] == pytest.approx(1 / (population["effective_pairs"] + 1))  # beyond every pair
        assert by_name[method]["comparability"]["kept_count"] == remaining
    assert by_name["pcs"]["vote"]["source"] == "within-pair exact test"
    assert by_name["pcs"]["calibration"]["n"] == remaining
    assert by_name["pcs"]["calibration"]["min_attainable"] == pytest.approx(10 ** by_name["pcs"]["null"]["min_log10_pvalue"])
    # 15 pairs of 6 models cannot reach 0.01: the population methods say so and do not count
    robust = by_name["robust-match"]["vote"]
    assert not robust["counts"] and robust["reason"].startswith("no comparable population")
    assert "robust-match" not in doc["verdict"]["deciding"]
    assert {"norm", "pcs", "neuron-match"} <= set(doc["verdict"]["deciding"])
    assert all(by_name[m]["vote"]["source"] == "within-pair exact test" for m in doc["verdict"]["deciding"])


def test_stranger_is_not_rejected(world, tmp_path):
    root, paths, _, stranger = world
    plan = write_plan(tmp_path / "plan.json", baseline=root / "population")
    audit = run_audit(paths[1], stranger, baseline=root / "population", plan=plan)
    assert audit.verdict.label == NOT_REJECTED
    assert run_audit(paths[1], stranger, baseline=root / "population").verdict.label == EXPLORATORY


def test_audit_json_is_byte_identical_and_seed_must_match(world):
    root, paths, suspect, _ = world
    first = dumps(audit_doc(run_audit(paths[2], suspect, baseline=root / "population")))
    assert first == dumps(audit_doc(run_audit(paths[2], suspect, baseline=root / "population")))
    with pytest.raises(InputError, match="seed 3"):
        run_audit(paths[2], suspect, baseline=root / "population", seed=4)


def test_evaluate_a_reported_number(world, run_cli):
    root, _, _, _ = world
    population = Population.open(root / "population")
    null = population.pair_table("attn-std")
    floor = 1 / (1 + effective_pairs(null.statistics, list(null.pairs)))
    code, out, err = run_cli("evaluate", "--method", "attn-std", "--statistic", "1.0", "--baseline", root / "population",
                             "--depth", "4", "5", "--alpha", "0.25")
    assert code == 0, err
    assert f"empirical p = {max(floor, 1 / (null.statistics.size + 1)):.4g} (0 pair(s) at least as similar" in out
    assert "kept 21 pair(s), dropped 0" in out
    # outside the population's range: no p-value, what would be needed, exit 4
    code, out, err = run_cli("evaluate", "--method", "attn-std", "--statistic", "0.927", "--baseline", root / "population",
                             "--depth", "48", "48")
    assert code == 4 and out == "" and "no p-value" in err and "32-72 layers" in err
    # comparable, but 21 pairs of 7 models cannot reach 0.01
    code, out, err = run_cli("evaluate", "--method", "attn-std", "--statistic", "0.9", "--baseline", root / "population",
                             "--depth", "4", "4")
    assert code == 4 and "cannot reach alpha 0.01" in err
    code, _, err = run_cli("evaluate", "--method", "nope", "--statistic", "0.5", "--baseline", root / "population",
                           "--depth", "4")
    assert code == 2 and "unknown method" in err
    code, _, err = run_cli("evaluate", "--method", "attn-std", "--statistic", "1.5", "--baseline", root / "population",
                           "--depth", "4")
    assert code == 2 and "outside [-1, 1]" in err


def test_scan_ranks_the_true_parent_first(world, run_cli):
    root, paths, suspect, stranger = world
    code, out, err = run_cli("scan", suspect, stranger, paths[0], paths[3], "--baseline", root / "population")
    assert code == 0, err
    ranked = [line.split()[1] for line in out.splitlines()[1:4]]
    assert ranked[0] == str(paths[0])
    assert "yes (BH <= alpha)" in out.splitlines()[1] and "Exploratory" in out


def test_scan_fingerprints_the_suspect_once_and_matches_one_audit_per_candidate(world, monkeypatch):
    from audit.auditor import scan
    from audit.methods import REGISTRY

    root, paths, suspect, stranger = world
    candidates = [stranger, paths[0], paths[3]]
    one_by_one = {str(c): audit_doc(run_audit(suspect, c, baseline=root / "population")) for c in candidates}
    extracted = []
    for method in set(REGISTRY.values()):
        original = method.extract
        monkeypatch.setattr(method, "extract", lambda self, model, seed, _f=original: extracted.append(model) or _f(self, model, seed))
    rows = scan(suspect, candidates, baseline=root / "population")
    assert {row.candidate: audit_doc(row.audit) for row in rows} == one_by_one
    kinds = {method().fingerprint_kind for method in REGISTRY.values()}
    # each fingerprint kind once for the suspect plus once per candidate, at most
    assert len(extracted) <= len(kinds) * (1 + len(candidates))
    assert len({id(model) for model in extracted}) == 1 + len(candidates)


def test_baseline_cli_list_and_matrix(world, run_cli):
    root, _, _, _ = world
    code, out, _ = run_cli("baseline", "list", root / "population")
    assert code == 0 and out.count("llama") == MEMBERS
    code, out, _ = run_cli("baseline", "matrix", root / "population", "--methods", "pcs")
    assert code == 0 and f"pcs: {MEMBERS * (MEMBERS - 1) // 2} comparable pair(s)" in out
    code, _, err = run_cli("baseline", "list", root / "nowhere")
    assert code == 2 and "not a baseline population" in err


def test_outdated_fingerprints_are_refused_until_refreshed(world, tmp_path, monkeypatch, run_cli):
    import shutil

    from audit.methods.attn_std import AttnStd

    root, paths, suspect, stranger = world
    shutil.copytree(root / "population", tmp_path / "pop")
    before = Population.open(tmp_path / "pop").pair_table("attn-std").statistics
    monkeypatch.setattr(AttnStd, "fingerprint_version", AttnStd.fingerprint_version + 1)  # as after an upgrade
    population = Population.open(tmp_path / "pop")
    assert population.outdated() == {f"m{i}": ["attn-std"] for i in range(MEMBERS)}
    with pytest.raises(InputError, match=r"7 member\(s\) \(m0, m1, m2, \.\.\.\) lack the attn-std fingerprint .*baseline refresh"):
        population.pair_table("attn-std")
    assert population.pair_table("norm").statistics.size  # other methods are unaffected
    code, out, _ = run_cli("baseline", "list", tmp_path / "pop")
    assert code == 0 and "7 member(s) lack current attn-std fingerprints" in out
    code, _, err = run_cli("baseline", "refresh", tmp_path / "pop", stranger)
    assert code == 2 and "match no member" in err
    code, out, err = run_cli("baseline", "refresh", tmp_path / "pop", *paths, "--workers", "1")
    assert code == 0, err
    refreshed = Population.open(tmp_path / "pop")
    assert refreshed.outdated() == {}
    assert refreshed.fingerprint("m0", "attn-std").version == AttnStd.fingerprint_version
    np.testing.assert_array_equal(refreshed.pair_table("attn-std").statistics, before)  # same computation, new label
    assert json.loads((tmp_path / "pop" / "pairs.json").read_text())["methods"]["attn-std"]["fingerprint_version"] == \
        AttnStd.fingerprint_version


def test_an_edited_pairs_cache_is_refused(world, tmp_path, run_cli):
    import shutil

    root, _, _, _ = world
    shutil.copytree(root / "population", tmp_path / "pop")
    cache = tmp_path / "pop" / "pairs.json"
    data = json.loads(cache.read_text())
    data["methods"]["norm"]["statistics"] = [0.5] * len(data["methods"]["norm"]["statistics"])
    cache.write_text(json.dumps(data))
    with pytest.raises(InputError, match="pairs.json: SHA-256 differs from the one population.json records"):
        Population.open(tmp_path / "pop")
    code, out, err = run_cli("baseline", "matrix", tmp_path / "pop")
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "pairs.json: SHA-256 differs" in err


def test_options_of_a_new_population_are_refused_for_an_existing_one(world, capsys):
    from audit.cli import main

    root, paths, _, _ = world
    before = (root / "population" / "population.json").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "add", str(root / "population"), str(paths[0]), "--seed", "4", "--description", "x"])
    assert exit_.value.code == 2
    assert "--description, --seed only set up a new population" in capsys.readouterr().err
    assert (root / "population" / "population.json").read_bytes() == before
