"""`audit compare`: the table, the results document (byte-identical per seed), inapplicable methods, bad input."""

from __future__ import annotations

import json

import pytest
from methods_support import build, derive, finetune

from audit.compare import compare_models
from audit.format.json import comparison_doc, dumps
from audit.stats import format_pvalue
from audit.methods import REGISTRY
from audit.testing.synth import Dims, make_checkpoint

DIMS = Dims(layers=5, hidden=16, mlp=32, heads=2, vocab=40)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    a = build(root / "a", 1, DIMS)
    return a, derive(a, root / "b", finetune(0.3, 2))


def test_json_document(pair, run_cli, tmp_path):
    out = tmp_path / "result.json"
    code, stdout, err = run_cli("compare", *pair, "--json", out, "--seed", "3")
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["seed"] == 3
    assert [m["path"] for m in doc["models"]] == [str(p) for p in pair]
    assert all(len(m["sha256"]) == 64 and "model.safetensors" in m["files"] for m in doc["models"])
    assert [m["name"] for m in doc["methods"]] == list(REGISTRY)
    for entry in doc["methods"]:
        assert entry["applicable"] and entry["reason"] is None
        assert {"name", "statistic", "pvalue", "log10_pvalue", "null", "applicable", "reason"} <= set(entry)
        assert entry["null"]["kind"] in ("exact-permutation", "monte-carlo-permutation", "parametric")
        assert "size" in entry["null"] and entry["log10_pvalue"] < -2
    for name in REGISTRY:
        assert name in stdout
    assert "r per projection: q " in stdout
    assert list(tmp_path.iterdir()) == [out]  # atomic write leaves no temporary file


def test_same_seed_same_bytes(pair, tmp_path, run_cli):
    first, second, other = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "3.json"
    for path, seed in ((first, "7"), (second, "7"), (other, "8")):
        assert run_cli("compare", *pair, "--seed", seed, "--json", path)[0] == 0
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()  # the Monte Carlo nulls follow the seed


def test_inapplicable_methods_say_why(tmp_path):
    a = make_checkpoint(tmp_path / "a", "llama", DIMS, seed=1).path  # no tokenizer.json
    b = make_checkpoint(tmp_path / "b", "llama", Dims(layers=7, hidden=16, mlp=32, heads=2, vocab=40), seed=2).path
    comparison = compare_models(a, b, methods=["attn-std", "neuron-match", "robust-match"])
    by_name = {o.method.name: o for o in comparison.outcomes}
    assert by_name["attn-std"].applicable
    assert not by_name["neuron-match"].applicable and "depths differ (5 vs 7" in by_name["neuron-match"].reason
    assert "no tokenizer.json" in by_name["robust-match"].reason
    doc = json.loads(dumps(comparison_doc(comparison)))
    assert doc["methods"][2]["applicable"] is False and doc["methods"][2]["pvalue"] is None


def test_bad_input_is_one_line_and_exit_2(pair, tmp_path, run_cli):
    code, _, err = run_cli("compare", pair[0], tmp_path / "missing")
    assert code == 2 and err.count("\n") == 1 and err.startswith("audit: error:")
    code, _, err = run_cli("compare", *pair, "--methods", "no-such-method")
    assert code == 2 and "unknown method 'no-such-method'" in err
    (tmp_path / "pickled.bin").write_bytes(b"\x80\x04")
    assert run_cli("compare", pair[0], tmp_path / "pickled.bin")[0] == 2


def test_method_selection_and_table(pair, run_cli):
    code, out, err = run_cli("compare", *pair, "--methods", "pcs,norm")
    assert code == 0, err
    assert "pcs" in out and "norm" in out and "neuron-match" not in out
    assert "not proof of independence" in out


@pytest.mark.parametrize(("log10_p", "text"), [(-0.5, "0.3162"), (-2.0, "0.01"), (-4512.5, "3.16e-4513"),
                                               (-7.0, "1.00e-7")])
def test_pvalue_formatting_beyond_float_range(log10_p, text):
    assert format_pvalue(log10_p) == text


@pytest.mark.parametrize("argv, phrase", [
    (["compare", "A", "B", "--alpha", "0.05"], "--alpha needs --baseline"),
    (["compare", "A", "B", "--baseline", "P", "--budget", "1000"], "--budget cannot be used with --baseline"),
    (["compare", "A", "B", "--methods", "attn-std", "--budget", "1000"], "none of the chosen methods has a fingerprint budget"),
    (["verify", "r.pdf", "--baseline", "P"], "--baseline is only read by --recompute"),
    (["report", "A", "B", "--out", "r.pdf", "--plan", "p.json", "--p12", "k.p12", "--key", "k.pem"], "--p12 holds the key and certificate"),
    (["report", "A", "B", "--out", "r.pdf", "--plan", "p.json", "--key", "k.pem"], "--key and --cert go together"),
])
def test_flags_meaningless_in_context_are_refused(capsys, argv, phrase):
    """Refused by the parser (usage line, exit 2) before any file is opened: A, B, P need not exist."""
    from audit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: audit ") and phrase in err


def test_budget_reaches_only_the_methods_that_declare_it():
    from audit.methods import tunable

    assert tunable(None, budget=1234) == {"neuron-match": {"budget": 1234}, "robust-match": {"budget": 1234},
                                          "aligned-match": {"budget": 1234}, "layer-map": {"budget": 1234},
                                          "head-match": {"budget": 1234}}
    assert tunable(["pcs", "robust-match"], budget=5) == {"robust-match": {"budget": 5}}
    assert tunable(["pcs"], budget=5) == {}
