"""Hugging Face model ids resolved from a local Hub cache (never the network), with blob checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from audit import open_checkpoint
from audit.baselines import Population
from audit.checkpoint.hub import git_blob_sha1, hub_cache_dir, parse_model_id, resolve_model
from audit.errors import InputError
from audit.report.build import _input_rows
from audit.testing.synth import Dims, make_checkpoint

DIMS = Dims(layers=3, hidden=16, mlp=32, heads=2, vocab=40)
MAIN = "a" * 40
DEV = "b" * 40


def put_in_cache(cache: Path, repo_id: str, commit: str, source: Path, refs: tuple[str, ...] = ()) -> Path:
    """Lay ``source``'s files out as huggingface_hub does: blobs by content id, snapshot links, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        lfs = file.suffix == ".safetensors"
        blob = hashlib.sha256(file.read_bytes()).hexdigest() if lfs else git_blob_sha1(file)
        shutil.copyfile(file, repo / "blobs" / blob)
        (snapshot / file.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any network use would fail loudly
    one = make_checkpoint(tmp_path / "one", "llama", DIMS, seed=1, tokenizer=True).path
    two = make_checkpoint(tmp_path / "two", "llama", DIMS, seed=1, perturb=(5, 0.2), tokenizer=True).path
    put_in_cache(cache, "org/model", MAIN, one, refs=("main",))
    put_in_cache(cache, "org/model", DEV, two, refs=("dev",))
    monkeypatch.chdir(tmp_path)
    return cache, one, two


def test_parse_model_ids():
    assert parse_model_id("meta-llama/Llama-2-7b-hf") == ("meta-llama/Llama-2-7b-hf", None)
    assert parse_model_id("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_model_id("org/name@" + MAIN) == ("org/name", MAIN)
    for text in ("/abs/path", "name", "a/b/c", "org/name@", "../x", "org/na me"):
        assert parse_model_id(text) is None


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert hub_cache_dir() == tmp_path / "x" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "h"))
    assert hub_cache_dir() == tmp_path / "h" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub_cache_dir() == tmp_path / "c"


def test_revisions_resolve_to_their_snapshots(hub):
    cache, one, two = hub
    for spec, commit, revision in (("org/model", MAIN, "main"), ("org/model@dev", DEV, "dev"),
                                   (f"org/model@{DEV}", DEV, DEV)):
        path, source = resolve_model(spec)
        assert path == cache / "models--org--model" / "snapshots" / commit
        assert (source.repo_id, source.revision, source.commit) == ("org/model", revision, commit)
    with open_checkpoint("org/model@dev") as checkpoint:
        assert checkpoint.source.commit == DEV
        assert checkpoint.file_hashes()["model.safetensors"] == hashlib.sha256((two / "model.safetensors").read_bytes()).hexdigest()


def test_a_local_path_wins(hub, tmp_path):
    local = make_checkpoint(tmp_path / "org" / "model", "llama", DIMS, seed=9).path
    path, source = resolve_model("org/model")
    assert source is None and path == Path("org/model") and path.resolve() == local


@pytest.mark.parametrize("spec,words", [("org/absent", "not a model in the local Hugging Face cache"),
                                        ("org/model@nobranch", "not a model in the local Hugging Face cache"),
                                        ("not-an-id", "no such file or directory")])
def test_unknown_ids_are_one_line(hub, run_cli, spec, words):
    code, out, err = run_cli("inspect", spec)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_inspect_and_compare_record_repo_commit_and_blob_checks(hub, run_cli, tmp_path):
    code, out, err = run_cli("inspect", "org/model@dev")
    assert code == 0, err
    assert f"Hugging Face org/model@dev, commit {DEV}: 1 of 1 LFS files match their SHA-256 blob ids" in out
    code, out, err = run_cli("compare", "org/model", "org/model@dev", "--methods", "attn-std", "--json", tmp_path / "r.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    a, b = (m["hub"] for m in doc["models"])
    assert (a["repo_id"], a["revision"], a["commit"]) == ("org/model", "main", MAIN)
    assert (b["revision"], b["commit"]) == ("dev", DEV)
    assert doc["models"][0]["path"] == "org/model"
    weights = a["files"]["model.safetensors"]
    assert weights == {"blob": doc["models"][0]["files"]["model.safetensors"], "lfs": True, "matches": True}
    assert a["files"]["config.json"]["lfs"] is False and a["files"]["config.json"]["matches"] is True
    assert a["lfs_files"] == a["lfs_verified"] == 1 and a["mismatched"] == []
    rows = {r["label"]: (r["a"], r["b"]) for r in _input_rows(
        [{"architecture": {}, "path": m["path"], "hub": m["hub"]} for m in doc["models"]])}
    assert rows["Hugging Face repository"] == ("org/model@main", "org/model@dev")
    assert rows["Commit"] == (MAIN, DEV)
    assert rows["LFS files"][0] == "1 of 1 match their SHA-256 blob id"


def test_a_blob_that_does_not_match_its_name_is_flagged(hub, run_cli, tmp_path):
    cache, one, _ = hub
    blob = os.path.realpath(cache / "models--org--model" / "snapshots" / MAIN / "model.safetensors")
    data = bytearray(Path(blob).read_bytes())
    data[-1] ^= 1  # one bit of one weight changed after download
    Path(blob).write_bytes(bytes(data))
    code, out, err = run_cli("compare", "org/model", "org/model@dev", "--methods", "attn-std", "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "0 of 1 LFS files match" in out and "WARNING: model.safetensors differ" in out
    hub_a = json.loads((tmp_path / "r.json").read_text())["models"][0]["hub"]
    assert hub_a["mismatched"] == ["model.safetensors"] and hub_a["files"]["model.safetensors"]["matches"] is False


def test_baseline_add_by_model_id(hub, tmp_path):
    population = Population.open_or_create(tmp_path / "pop", name="p", seed=0)
    added = population.add(["org/model", "org/model@dev"], workers=1)
    assert [m.name for m in added] == ["org--model", "org--model--dev"]
    assert added[0].source == f"Hugging Face org/model commit {MAIN}"


def test_cli_start_up_imports_none_of_the_input_format_libraries():
    import subprocess
    import sys

    code = "import sys, audit.cli; print(sorted(m for m in ('huggingface_hub', 'sentencepiece', 'gguf') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_report_inputs_name_the_repository_and_commit(hub):
    from audit.auditor import run_audit
    from audit.report.build import describe_inputs

    audit = run_audit("org/model", "org/model@dev", methods=["attn-std"])
    inputs = describe_inputs(audit)
    assert [i["hub"]["commit"] for i in inputs] == [MAIN, DEV]
    assert inputs[0]["architecture"]["family"] == "llama"
    assert {f["name"] for f in inputs[1]["files"]} == {"model.safetensors", "config.json", "tokenizer.json"}
