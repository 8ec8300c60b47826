"""File hashing: parallel threads, the opt-in hash cache, fresh-or-cached provenance, signed reports hash fresh."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
from methods_support import build

from audit.auditor import run_audit
from audit.checkpoint.hashing import (
    HASH_CACHE_ENV,
    READ_CHUNK,
    HashCache,
    HashingCancelled,
    hash_cache_from,
    hash_files,
    sha256_file,
)
from audit.compare import compare_models
from audit.errors import AuditError, InputError
from audit.report.build import write_report
from audit.testing.synth import Dims

DIMS = Dims(layers=3, hidden=16, mlp=32, heads=2, vocab=40)
AN_HOUR_AGO = time.time() - 3600


def aged(path, seconds_ago: float = 3600):
    """Set a file's modification time in the past, as for any file not written this minute."""
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def files(tmp_path):
    made = []
    for i, size in enumerate((0, 1, READ_CHUNK + 17, 3 * READ_CHUNK)):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(size))
        made.append(aged(path))
    return made


def test_parallel_hashes_equal_hashlib(files):
    found = hash_files(files, workers=3)
    assert list(found) == files
    for path in files:
        assert found[path].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert found[path].source == "fresh"


def test_cache_answers_second_run_and_notices_changes(files, tmp_path):
    cache = HashCache(tmp_path / "cache")
    first = hash_files(files, cache=cache)
    second = hash_files(files, cache=cache)
    assert {p: h.sha256 for p, h in second.items()} == {p: h.sha256 for p, h in first.items()}
    assert {h.source for h in first.values()} == {"fresh"} and {h.source for h in second.values()} == {"cache"}
    entries = sorted(p.name for p in cache.root.iterdir())
    stat = os.stat(files[2])
    assert f"{stat.st_dev}-{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}" in entries
    # Same size, new content, new mtime: a new key, so hashed again.
    files[2].write_bytes(os.urandom(READ_CHUNK + 17))
    aged(files[2], 60)
    third = hash_files(files, cache=cache)
    assert third[files[2]].source == "fresh"
    assert third[files[2]].sha256 == hashlib.sha256(files[2].read_bytes()).hexdigest() != first[files[2]].sha256


def test_racy_files_and_garbage_entries_are_not_trusted(tmp_path):
    cache = HashCache(tmp_path / "cache")
    path = tmp_path / "new.bin"
    path.write_bytes(b"just written")  # mtime now: could change again within one timestamp tick
    hash_files([path], cache=cache)
    assert hash_files([path], cache=cache)[path].source == "fresh"
    aged(path)
    cache.root.mkdir(parents=True, exist_ok=True)
    (cache.root / HashCache.key(os.stat(path))).write_text("not a digest\n")
    assert hash_files([path], cache=cache)[path].source == "fresh"  # and the entry is now rewritten
    assert hash_files([path], cache=cache)[path].source == "cache"


def test_cache_location_and_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(HASH_CACHE_ENV, raising=False)
    assert hash_cache_from() is None and hash_cache_from(False) is None
    assert hash_cache_from(True).root == tmp_path / "xdg" / "audit" / "hashes"
    monkeypatch.setenv(HASH_CACHE_ENV, "1")
    assert hash_cache_from().root == tmp_path / "xdg" / "audit" / "hashes"
    monkeypatch.setenv(HASH_CACHE_ENV, "off")
    assert hash_cache_from() is None
    monkeypatch.setenv(HASH_CACHE_ENV, "sometimes")
    with pytest.raises(AuditError, match="AUDIT_HASH_CACHE must be 1 or 0"):
        hash_cache_from()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert HashCache.default().root == tmp_path / "home" / ".cache" / "audit" / "hashes"


def test_unwritable_cache_is_skipped(files, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    found = hash_files(files, cache=HashCache(blocker / "cache"))
    assert {h.source for h in found.values()} == {"fresh"}


def test_stop_ends_hashing_at_the_next_chunk(files):
    stop = threading.Event()
    stop.set()
    with pytest.raises(HashingCancelled):
        sha256_file(files[3], stop)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match="cannot read for hashing"):
        hash_files([tmp_path / "gone.bin"])


@pytest.fixture
def pair(tmp_path):
    a, b = build(tmp_path / "a", 1, DIMS), build(tmp_path / "b", 2, DIMS)
    for model in (a, b):
        for path in model.iterdir():
            aged(path)
    return a, b


def test_compare_marks_cached_hashes(pair, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(HASH_CACHE_ENV, raising=False)
    docs = []
    for i, flags in enumerate(([], ["--hash-cache"], ["--hash-cache"], [])):
        out = tmp_path / f"{i}.json"
        code, stdout, err = run_cli("compare", *pair, "--methods", "attn-std", "--json", out, *flags)
        assert code == 0, err
        docs.append(json.loads(out.read_text()))
    hashed = [{h for m in doc["models"] for h in m["hashed"].values()} for doc in docs]
    assert hashed == [{"fresh"}, {"fresh"}, {"cache"}, {"fresh"}]
    assert len({json.dumps([m["files"] for m in doc["models"]]) for doc in docs}) == 1
    assert set(docs[0]["models"][0]["hashed"]) == {"model.safetensors", "config.json", "tokenizer.json"}
    code, stdout, _ = run_cli("compare", *pair, "--methods", "attn-std", "--hash-cache")
    assert "file hashes from the hash cache" in stdout
    monkeypatch.setenv(HASH_CACHE_ENV, "1")  # the environment switches it on as well
    code, stdout, _ = run_cli("compare", *pair, "--methods", "attn-std")
    assert "file hashes from the hash cache" in stdout


def test_signed_report_refuses_cached_hashes(pair, tmp_path):
    cache = HashCache(tmp_path / "cache")
    compare_models(*pair, methods=["attn-std"], hash_cache=cache)
    audit = run_audit(*pair, methods=["attn-std"], hash_cache=cache)
    assert {h for m in audit.comparison.models for h in m.hashed.values()} == {"cache"}
    out = tmp_path / "report.pdf"
    with pytest.raises(InputError, match="a signed report hashes every file fresh"):
        write_report(audit, out, key=None, case_id="case", command="audit report", verify_command="audit verify")
    assert not out.exists()
    fresh = run_audit(*pair, methods=["attn-std"])
    assert all(m.fresh for m in fresh.comparison.models)
