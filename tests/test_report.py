"""The signed PDF audit end to end: render, sign, verify, tamper, fail cleanly."""

from __future__ import annotations

import json
import subprocess

import pytest

from audit.stats import format_pvalue


@pytest.fixture(scope="module")
def signed(world, tmp_path_factory, run_cli_module):
    root, paths, suspect, _ = world
    keys = tmp_path_factory.mktemp("keys")
    code, _, err = run_cli_module({"AUDIT_PASSPHRASE": "s3cret"}, "keygen", "--name", "Test Auditor", "--org", "Lab", "--out", keys)
    assert code == 0, err
    out = keys / "case.pdf"
    code, _, err = run_cli_module({}, "plan", "--out", keys / "plan.json", "--baseline", root / "population")
    assert code == 0, err
    code, stdout, err = run_cli_module({"AUDIT_PASSPHRASE": "s3cret"}, "report", paths[0], suspect, "--baseline",
                                       root / "population", "--plan", keys / "plan.json", "--out", out, "--p12",
                                       keys / "test-auditor.p12", "--case-id", "CASE-7")
    assert code == 0, err
    assert "Evidence against independent training" in stdout
    return out, keys / "test-auditor.cert.pem", paths[0], suspect


@pytest.fixture(scope="module")
def run_cli_module():
    """Run the CLI in a subprocess with extra environment (module-scoped fixtures cannot use capsys)."""
    import os
    import sys

    def run(env: dict, *argv):
        done = subprocess.run([sys.executable, "-m", "audit.cli", *map(str, argv)], capture_output=True, text=True,
                              env={**os.environ, **env})
        return done.returncode, done.stdout, done.stderr

    return run


def test_report_is_pdfa3b_with_manifest_and_a_valid_signature(signed):
    pdf, cert, _, _ = signed
    assert "audit-manifest.json" in subprocess.run(["pdfdetach", "-list", str(pdf)], capture_output=True, text=True).stdout
    meta = subprocess.run(["pdfinfo", "-meta", str(pdf)], capture_output=True, text=True).stdout
    assert 'pdfaid:part="3" pdfaid:conformance="B"' in meta
    sig = subprocess.run(["pdfsig", str(pdf)], capture_output=True, text=True).stdout
    assert "Signature is Valid." in sig and "Total document signed" in sig
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True).stdout.splitlines()[2:]
    assert fonts and all(" yes " in line for line in fonts)  # every font embedded


def test_verify_passes_with_rehash_and_recompute(signed, run_cli_module):
    pdf, cert, a, b = signed
    code, out, err = run_cli_module({}, "verify", pdf, "--trust", cert, "--models", a, b, "--recompute")
    assert code == 0, out + err
    assert out.count("ok ") == 10 and "every number matches the manifest" in out
    assert "ok   baseline: " in out and "the audited population (digest" in out


def test_manifest_holds_the_verdict_and_hashes(signed, tmp_path):
    pdf, _, _, _ = signed
    subprocess.run(["pdfdetach", "-save", "1", "-o", str(tmp_path / "m.json"), str(pdf)], check=True)
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["case"]["id"] == "CASE-7"
    assert manifest["auditor"]["common_name"] == "Test Auditor" and manifest["auditor"]["self_signed"]
    assert manifest["audit"]["verdict"]["label"] == "derived"
    plan = json.loads((pdf.parent / "plan.json").read_text())
    assert manifest["audit"]["plan"]["sha256"] == __import__("hashlib").sha256((pdf.parent / "plan.json").read_bytes()).hexdigest()
    assert manifest["audit"]["plan"]["created"] == plan["created"] and manifest["audit"]["exploratory"] is None
    assert manifest["audit"]["decision"]["rule"].startswith("Holm")
    assert set(manifest["audit"]["models"][0]["files"]) == {"model.safetensors", "config.json", "tokenizer.json"}


def test_flipped_byte_fails_verification(signed, tmp_path, run_cli_module):
    pdf, cert, _, _ = signed
    data = bytearray(pdf.read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    code, out, _ = run_cli_module({}, "verify", tampered, "--trust", cert)
    assert code == 1 and "FAIL" in out and "NOT verified" in out


def test_appended_revision_fails_verification(signed, tmp_path, run_cli_module):
    from io import BytesIO

    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    pdf, cert, _, _ = signed
    writer = IncrementalPdfFileWriter(BytesIO(pdf.read_bytes()))
    writer.add_object(generic.TextStringObject("appended after signing"))
    buffer = BytesIO()
    writer.write(buffer)
    appended = tmp_path / "appended.pdf"
    appended.write_bytes(buffer.getvalue())
    code, out, _ = run_cli_module({}, "verify", appended, "--trust", cert)
    assert code == 1 and "FAIL coverage" in out


def test_changed_model_fails_rehash(signed, tmp_path, run_cli_module):
    import shutil

    pdf, cert, a, b = signed
    copy = tmp_path / "b"
    shutil.copytree(b, copy)
    config = json.loads((copy / "config.json").read_text())
    config["note"] = "edited"
    (copy / "config.json").write_text(json.dumps(config))
    code, out, _ = run_cli_module({}, "verify", pdf, "--trust", cert, "--models", a, copy)
    assert code == 1 and "FAIL model B" in out and "config.json" in out


def test_wrong_passphrase_leaves_no_file(world, tmp_path, run_cli_module):
    root, paths, suspect, _ = world
    code, _, _ = run_cli_module({"AUDIT_PASSPHRASE": "pw"}, "keygen", "--name", "X", "--org", "Y", "--out", tmp_path)
    assert code == 0
    out = tmp_path / "never.pdf"
    code, stdout, err = run_cli_module({"AUDIT_PASSPHRASE": "wrong"}, "report", paths[0], suspect, "--baseline",
                                       root / "population", "--plan", tmp_path / "unread.json", "--out", out, "--p12",
                                       tmp_path / "x.p12")
    assert code == 2 and err.count("\n") == 1 and "wrong passphrase" in err
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


@pytest.mark.parametrize("log10_p,text", [(-0.5, "0.3162"), (-7.0, "1.00e-7"), (-420.3, "5.01e-421")])
def test_pvalue_formatting(log10_p, text):
    assert format_pvalue(log10_p) == text


def test_report_without_baseline_counts_exact_tests_only(world, tmp_path, run_cli_module):
    root, paths, suspect, _ = world
    env = {"AUDIT_PASSPHRASE": "pw"}
    assert run_cli_module(env, "keygen", "--name", "Solo", "--org", "Lab", "--out", tmp_path)[0] == 0
    out = tmp_path / "solo.pdf"
    assert run_cli_module({}, "plan", "--out", tmp_path / "plan.json")[0] == 0
    code, stdout, err = run_cli_module(env, "report", paths[0], suspect, "--out", out, "--p12", tmp_path / "solo.p12",
                                       "--plan", tmp_path / "plan.json")
    assert code == 0, err
    code, text, _ = run_cli_module({}, "verify", out, "--trust", tmp_path / "solo.cert.pem", "--recompute")
    assert code == 0, text
    subprocess.run(["pdfdetach", "-save", "1", "-o", str(tmp_path / "m.json"), str(out)], check=True)
    doc = json.loads((tmp_path / "m.json").read_text())["audit"]
    assert "baseline" not in doc and doc["verdict"]["label"] == "derived"
    counted = {m["name"] for m in doc["methods"] if m["vote"]["counts"]}
    # exact and calibrated; the others need a population
    assert counted == {"norm", "pcs", "neuron-match", "aligned-match", "layer-map", "head-match"}


def test_verify_recompute_refuses_another_population(signed, world, tmp_path, run_cli_module):
    import shutil

    from audit.baselines import Population

    pdf, cert, a, b = signed
    root, _, _, stranger = world
    shutil.copytree(root / "population", tmp_path / "pop")
    Population.open(tmp_path / "pop").add([stranger], names=["extra"], workers=1)
    code, out, _ = run_cli_module({}, "verify", pdf, "--trust", cert, "--recompute", "--baseline", tmp_path / "pop")
    assert code == 1 and "FAIL baseline: " in out and "is not the audited population's" in out


def test_signed_report_refuses_an_analysis_off_its_plan(world, tmp_path, run_cli_module):
    root, paths, suspect, _ = world
    env = {"AUDIT_PASSPHRASE": "pw"}
    assert run_cli_module(env, "keygen", "--name", "Off", "--org", "Lab", "--out", tmp_path)[0] == 0
    assert run_cli_module({}, "plan", "--out", tmp_path / "plan.json", "--baseline", root / "population")[0] == 0
    out = tmp_path / "off.pdf"
    base = ("report", paths[0], suspect, "--baseline", root / "population", "--out", out, "--p12", tmp_path / "off.p12")
    code, _, err = run_cli_module(env, *base, "--plan", tmp_path / "plan.json", "--methods", "norm")
    assert code == 2 and "differs from it" in err and "methods norm instead of" in err
    code, _, err = run_cli_module(env, *base, "--plan", tmp_path / "plan.json", "--alpha", "0.05")
    assert code == 2 and "alpha 0.05 instead of 0.01" in err
    code, _, err = run_cli_module(env, *base)
    assert code == 2 and "--plan" in err  # no plan: no signed report
    assert run_cli_module({}, "plan", "--out", tmp_path / "alone.json")[0] == 0
    code, _, err = run_cli_module(env, *base, "--plan", tmp_path / "alone.json")
    assert code == 2 and "plan was made for population none" in err
    plan = tmp_path / "plan.json"
    plan.write_text(plan.read_text().replace('"alpha": 0.01', '"alpha":0.01'))
    code, _, err = run_cli_module(env, *base, "--plan", plan)
    assert code == 2 and "edited" in err  # a plan is read only in the canonical form its hash was taken of
    assert not out.exists()
def test_inputs_come_from_the_audit_record_not_from_reopening_the_models(tmp_path):
    """The report describes the bytes the audit hashed: with the models gone afterwards, the inputs are intact."""
    import shutil

    from safetensors.numpy import load_file

    from audit.auditor import run_audit
    from audit.report.build import describe_inputs
    from audit.testing.synth import Dims, make_checkpoint

    dims = Dims(layers=3, hidden=16, mlp=32, heads=2, kv_heads=1, vocab=30)
    a = make_checkpoint(tmp_path / "a", "llama", dims, seed=1, tokenizer=True).path
    b = make_checkpoint(tmp_path / "b", "llama", dims, seed=2).path
    audit = run_audit(a, b, methods=["attn-std"])
    sizes = {p.name: p.stat().st_size for p in a.iterdir()}
    config = json.loads((a / "config.json").read_text())
    tensors = load_file(a / "model.safetensors")
    shutil.rmtree(a)
    shutil.rmtree(b)
    first, second = describe_inputs(audit)
    assert {f["name"]: f["bytes"] for f in first["files"]} == sizes and len(second["files"]) == 2  # no tokenizer
    assert first["config"] == config
    assert first["architecture"] == {
        "family": "llama", "model_type": config.get("model_type"), "depth": 3, "hidden": 16, "mlp_width": 32,
        "vocab": 30, "heads": 2, "kv_heads": 1, "experts": 0, "parameters": sum(t.size for t in tensors.values()),
        "dtypes": {"F32": len(tensors)}}
