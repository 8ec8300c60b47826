"""Population integrity: concurrent writers, crashes, tampering, duplicates, bundles."""

from __future__ import annotations

import datetime as dt
import io
import json
import multiprocessing
import os
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest

from audit.baselines import Population, store
from audit.baselines.bundle import export_bundle, import_bundle, read_bundle
from audit.checkpoint import open_checkpoint
from audit.checkpoint.hashing import tensor_content_digest
from audit.errors import InputError
from audit.methods import Fingerprint
from audit.testing.synth import Dims, make_checkpoint

TINY = Dims(layers=2, hidden=16, mlp=32, heads=2, vocab=24)
FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Five tiny independent models, and a population of the first three."""
    root = tmp_path_factory.mktemp("tiny")
    paths = [make_checkpoint(root / f"t{i}", "llama", TINY, seed=500 + i, tokenizer=True).path for i in range(5)]
    population = Population.open_or_create(root / "pop", name="tiny", seed=1)
    population.add(paths[:3], workers=1, source="audit.testing.synth", licence="CC0", notes="independent inits")
    return root, paths


def _copy(tiny, tmp_path) -> Path:
    import shutil

    root, _ = tiny
    shutil.copytree(root / "pop", tmp_path / "pop")
    return tmp_path / "pop"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != store.LOCK}


def _child(target, *args) -> None:
    """Body of a forked process: its exit code says whether ``target(*args)`` succeeded."""
    try:
        target(*args)
    except BaseException:  # noqa: BLE001 - the exit code is the answer
        os._exit(1)
    os._exit(0)


def _in_child(target, *args) -> int:
    """Run ``target(*args)`` in a forked process (a real process: its own crash, its own lock); its exit code."""
    process = FORK.Process(target=_child, args=(target, *args))
    process.start()
    process.join(60)
    return process.exitcode


def _add_after(barrier, folder: Path, path: Path, name: str) -> None:
    barrier.wait(10)
    Population.open_or_create(folder, name="race", seed=1).add([path], names=[name], workers=1)


def test_twenty_trials_of_concurrent_adds_lose_nothing(tiny, tmp_path):
    _, paths = tiny
    for trial in range(20):
        folder = tmp_path / f"race{trial}"
        barrier = FORK.Barrier(2)
        processes = [FORK.Process(target=_child, args=(_add_after, barrier, folder, paths[i], f"r{i}")) for i in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0, 0]
        population = Population.open(folder)
        assert sorted(population.members) == ["r0", "r1"], f"trial {trial}"
        assert population.pair_table("pcs").pairs == (("r0", "r1"),)


def _die_at(function_name: str, folder: Path, path: Path) -> None:
    """Add a member and be killed (SIGKILL: no cleanup runs) at the first call of ``function_name``."""
    import audit.baselines.population as module

    def kill(*args, **kwargs):
        if function_name != "write_atomic" or Path(args[0]).name == store.MANIFEST:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    owner = store if function_name == "publish" else module
    original = getattr(owner, function_name)
    setattr(owner, function_name, kill)
    Population.open(folder).add([path], names=["late"], workers=1)


def test_a_writer_killed_before_the_manifest_leaves_the_old_population_and_no_debris(tiny, tmp_path):
    _, paths = tiny
    folder = _copy(tiny, tmp_path)
    before = _files(folder)
    digest = Population.open(folder).digest
    assert _in_child(_die_at, "write_atomic", folder, paths[3]) == -signal.SIGKILL
    debris = set(_files(folder)) - set(before)
    assert debris and all(".staged" in name for name in debris)  # fingerprints and pairs were staged, then the kill
    (folder / "models" / "t0" / ".pcs.npz.0123456789ab.tmp").write_bytes(b"half")  # a write cut short
    (folder / "models" / "ghost").mkdir()
    (folder / "models" / "ghost" / "pcs.npz").write_bytes(b"orphan")  # a member folder no manifest names
    population = Population.open(folder)  # the next open, under the lock, cleans up
    assert population.digest == digest and "late" not in population.members
    assert _files(folder) == before and not (folder / "models" / "late").exists()


def test_a_writer_killed_after_the_manifest_is_rolled_forward(tiny, tmp_path):
    _, paths = tiny
    folder = _copy(tiny, tmp_path)
    assert _in_child(_die_at, "publish", folder, paths[3]) == -signal.SIGKILL
    with pytest.raises(InputError, match="missing"):  # without the lock nothing settles: the read refuses
        Population._read(folder, settle=False)
    population = Population.open(folder)
    assert "late" in population.members and population.fingerprint("late", "pcs") is not None
    assert not [p for p in folder.rglob("*") if ".staged" in p.name or p.name.endswith(".tmp")]


def test_duplicates_are_refused_and_write_nothing(tiny, tmp_path):
    _, paths = tiny
    folder = _copy(tiny, tmp_path)
    before = _files(folder)
    other_layout = make_checkpoint(tmp_path / "resharded", "llama", TINY, seed=501, shards=2, config=False).path
    population = Population.open(folder)
    with pytest.raises(InputError, match="same weights as member 't1'"):
        population.add([other_layout], names=["copy"], workers=1)
    with pytest.raises(InputError, match="already in population"):
        population.add([paths[3]], names=["t0"], workers=1)
    with pytest.raises(InputError, match="already in population"):
        population.add([paths[3], paths[4]], names=["x", "x"], workers=1)
    assert _files(folder) == before


def test_content_hash_names_the_tensors_not_the_files(tmp_path):
    single = make_checkpoint(tmp_path / "single", "llama", TINY, seed=9, tokenizer=True).path
    sharded = make_checkpoint(tmp_path / "sharded", "llama", TINY, seed=9, shards=3, config=False).path
    other = make_checkpoint(tmp_path / "other", "llama", TINY, seed=10).path
    digests = []
    for path in (single, sharded, other):
        with open_checkpoint(path) as checkpoint:
            digests.append(tensor_content_digest(checkpoint.tensors.values()))
    assert digests[0] == digests[1] != digests[2]
    with open_checkpoint(single) as checkpoint:  # one byte of one tensor changes it
        tensors = list(checkpoint.tensors.values())
        changed = type("T", (), {"name": tensors[0].name, "dtype": tensors[0].dtype, "shape": tensors[0].shape,
                                 "raw": lambda self: np.frombuffer(bytes([1]) + tensors[0].raw().tobytes()[1:],
                                                                   dtype=tensors[0].raw().dtype)})()
        assert tensor_content_digest([changed, *tensors[1:]]) != digests[0]


def _rewrite_recorded(folder: Path, relative: str, data: bytes) -> None:
    """Replace a file AND its recorded SHA-256, as a careless tool (or an adversary) would."""
    (folder / relative).write_bytes(data)
    manifest = json.loads((folder / store.MANIFEST).read_text())
    if relative == store.PAIRS:
        manifest["pairs"]["sha256"] = store.sha256(data)
    else:
        _, member, name = relative.split("/")
        next(m for m in manifest["members"] if m["name"] == member)["fingerprints"][name[:-4]] = store.sha256(data)
    (folder / store.MANIFEST).write_text(json.dumps(manifest))


def _nan_fingerprint(folder: Path) -> bytes:
    fingerprint = Fingerprint.load(folder / "models" / "t0" / "norm.npz")
    arrays = {k: np.where(np.arange(v.size).reshape(v.shape) == 0, np.nan, v) if v.dtype.kind == "f" else v
              for k, v in fingerprint.arrays.items()}
    return Fingerprint(fingerprint.method, fingerprint.version, fingerprint.seed, fingerprint.params, fingerprint.meta, arrays).to_bytes()


def _nan_pairs(folder: Path) -> bytes:
    pairs = json.loads((folder / store.PAIRS).read_text())
    pairs["methods"]["pcs"]["statistics"][0] = float("nan")
    return json.dumps(pairs).encode()


TAMPERING = {
    "fingerprint byte flipped": (lambda f: (f / "models/t1/pcs.npz").write_bytes(_flip((f / "models/t1/pcs.npz").read_bytes(), 100)),
                                 "t1/pcs.npz: SHA-256 differs from the one population.json records"),
    "fingerprint swapped": (lambda f: (f / "models/t1/norm.npz").write_bytes((f / "models/t2/norm.npz").read_bytes()),
                            "t1/norm.npz: SHA-256 differs"),
    "pairs.json edited": (lambda f: (f / store.PAIRS).write_text((f / store.PAIRS).read_text().replace("0.", "0.9", 1)),
                          "pairs.json: SHA-256 differs"),
    "npz missing": (lambda f: (f / "models/t2/pcs.npz").unlink(), "t2/pcs.npz: missing"),
    "npz garbage": (lambda f: _rewrite_recorded(f, "models/t2/norm.npz", b"garbage"), "unreadable fingerprint"),
    "NaN in a fingerprint": (lambda f: _rewrite_recorded(f, "models/t0/norm.npz", _nan_fingerprint(f)), "NaN or infinite"),
    "NaN null value": (lambda f: _rewrite_recorded(f, store.PAIRS, _nan_pairs(f)), "null holds NaN"),
    "pairs of another population": (lambda f: _rewrite_recorded(f, store.PAIRS, (f / store.PAIRS).read_bytes().replace(
        b'"population": "', b'"population": "0')), "made for another population"),
    "member field of a wrong type": (lambda f: (f / store.MANIFEST).write_text((f / store.MANIFEST).read_text().replace(
        '"licence": "CC0"', '"licence": 7', 1)), "licence must be a string"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_or_broken_populations_are_refused_with_one_line(case, tiny, tmp_path, run_cli):
    _, paths = tiny
    folder = _copy(tiny, tmp_path)
    tamper, message = TAMPERING[case]
    tamper(folder)
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        Population.open(folder)
    for argv in (("baseline", "matrix", folder), ("compare", paths[0], paths[3], "--baseline", folder, "--methods", "attn-std")):
        code, out, err = run_cli(*argv)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err, (argv, err)


def test_bundle_round_trip_keeps_the_digest_and_the_bytes(tiny, tmp_path, run_cli):
    root, _ = tiny
    original = Population.open(root / "pop")
    first = export_bundle(root / "pop", tmp_path / "a.popbundle")
    assert first.digest == original.digest and (first.members, first.fingerprints) == (3, 18)  # 6 fingerprint kinds
    code, out, err = run_cli("baseline", "import", tmp_path / "a.popbundle", tmp_path / "copy")
    assert code == 0, err
    assert f"population digest {original.digest}" in out
    copy = Population.open(tmp_path / "copy")
    assert copy.digest == original.digest and copy.members == original.members
    for method in ("pcs", "attn-std"):  # recomputed by the importer, equal to the cache
        np.testing.assert_array_equal(copy.pair_table(method).statistics, original.pair_table(method).statistics)
    export_bundle(tmp_path / "copy", tmp_path / "b.popbundle")
    assert (tmp_path / "a.popbundle").read_bytes() == (tmp_path / "b.popbundle").read_bytes()
    code, _, err = run_cli("baseline", "import", tmp_path / "a.popbundle", tmp_path / "copy")
    assert code == 2 and "not empty" in err


def _edit_bundle(source: Path, target: Path, edit) -> None:
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    edit(files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())


def _set(files: dict, name: str, data: bytes) -> None:
    files[name] = data


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


BUNDLE_TAMPERING = {
    "fingerprint changed": (lambda f: _set(f, "models/t0/pcs.npz", _flip(f["models/t0/pcs.npz"], 100)),
                            "fingerprint t0/pcs differs from the SHA-256"),
    "fingerprint and its record changed": (
        lambda f: (_set(f, "population.json", f["population.json"].replace(store.sha256(f["models/t0/norm.npz"]).encode(),
                                                                           store.sha256(f["models/t1/norm.npz"]).encode())),
                   _set(f, "models/t0/norm.npz", f["models/t1/norm.npz"])),
        "digest does not match its contents"),
    "digest changed": (lambda f: _set(f, "bundle.json", f["bundle.json"].replace(b'"digest": "', b'"digest": "f')),
                       "digest does not match"),
    "member removed": (lambda f: f.pop("models/t2/pcs.npz"), "missing t2/pcs"),
    "stray file": (lambda f: _set(f, "../escape", b"x"), "unexpected file"),
    "not a zip": (lambda f: f.clear(), "not a population bundle"),
}


@pytest.mark.parametrize("case", sorted(BUNDLE_TAMPERING))
def test_tampered_bundles_are_refused_and_nothing_is_imported(case, tiny, tmp_path, run_cli):
    root, _ = tiny
    export_bundle(root / "pop", tmp_path / "good.popbundle")
    edit, message = BUNDLE_TAMPERING[case]
    _edit_bundle(tmp_path / "good.popbundle", tmp_path / "bad.popbundle", edit)
    if case == "not a zip":
        (tmp_path / "bad.popbundle").write_bytes(b"PK\x03\x04 truncated")
    code, out, err = run_cli("baseline", "import", tmp_path / "bad.popbundle", tmp_path / "into")
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "into").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".into")]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from audit.signature import keygen

    folder = tmp_path_factory.mktemp("bundle-keys")
    keygen("Bundle Auditor", "Lab", folder, "pw")
    keygen("Someone Else", "Other Lab", folder, "pw")
    return folder


def test_signed_bundle_is_verified_and_a_wrong_trust_certificate_refused(tiny, keys, tmp_path, run_cli, monkeypatch):
    from audit.signature import load_certificates, load_pkcs12

    root, _ = tiny
    monkeypatch.setenv("AUDIT_PASSPHRASE", "pw")
    code, out, err = run_cli("baseline", "export", root / "pop", tmp_path / "s.popbundle", "--p12", keys / "bundle-auditor.p12")
    assert code == 0, err
    key = load_pkcs12(keys / "bundle-auditor.p12", "pw")
    assert f"signed by {key.info.subject}, SHA-256 fingerprint {key.info.sha256_fingerprint}" in out
    info = read_bundle(tmp_path / "s.popbundle", trust=load_certificates([keys / "bundle-auditor.cert.pem"]))
    assert "pinned" in info.trusted and info.signer.sha256_fingerprint == key.info.sha256_fingerprint
    code, out, err = run_cli("baseline", "import", tmp_path / "s.popbundle", tmp_path / "ok", "--trust", keys / "bundle-auditor.cert.pem")
    assert code == 0 and "trusted: " in out and "is pinned: byte-identical to a --trust certificate" in out, err
    code, _, err = run_cli("baseline", "import", tmp_path / "s.popbundle", tmp_path / "no", "--trust", keys / "someone-else.cert.pem")
    assert code == 2 and "not trusted: no path to a trust anchor" in err and not (tmp_path / "no").exists()
    export_bundle(root / "pop", tmp_path / "u.popbundle")
    code, _, err = run_cli("baseline", "import", tmp_path / "u.popbundle", tmp_path / "no", "--trust", keys / "bundle-auditor.cert.pem")
    assert code == 2 and "not signed" in err
    # a signature taken from the bundle of another population does not verify over this one's statement
    _, paths = tiny
    other = Population.open(_copy(tiny, tmp_path))
    other.add([paths[3]], names=["t3"], workers=1)
    export_bundle(other.root, tmp_path / "o.popbundle", key=key)
    with zipfile.ZipFile(tmp_path / "o.popbundle") as archive:
        signature = archive.read("bundle.json.p7s")
    _edit_bundle(tmp_path / "u.popbundle", tmp_path / "grafted.popbundle", lambda f: _set(f, "bundle.json.p7s", signature))
    with pytest.raises(InputError, match="does not verify"):
        import_bundle(tmp_path / "grafted.popbundle", tmp_path / "no")
    assert not (tmp_path / "no").exists()


def test_a_signer_issued_by_a_trusted_ca_is_trusted_and_one_issued_by_a_non_ca_is_not(tiny, tmp_path):
    from cert_support import make_cert, signing_key

    root, _ = tiny
    ca_key, ca = make_cert("Bundle CA", ca=True)
    leaf_key, leaf = make_cert("CA-issued auditor", (ca_key, ca))
    plain_key, plain = make_cert("Not a CA")
    rogue_key, rogue = make_cert("Issued by a non-CA", (plain_key, plain))
    expired_key, expired = make_cert("Expired auditor", (ca_key, ca), not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                                     not_after=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))
    export_bundle(root / "pop", tmp_path / "ca.popbundle", key=signing_key(leaf_key, leaf, ca))
    info = read_bundle(tmp_path / "ca.popbundle", trust=[ca])
    assert info.signer.common_name == "CA-issued auditor" and "chains to the trust anchor CN=Bundle CA" in info.trusted
    export_bundle(root / "pop", tmp_path / "rogue.popbundle", key=signing_key(rogue_key, rogue, plain))
    with pytest.raises(InputError, match="not trusted: issuer is not a CA: CN=Not a CA"):
        read_bundle(tmp_path / "rogue.popbundle", trust=[plain])
    assert read_bundle(tmp_path / "rogue.popbundle").signer.common_name == "Issued by a non-CA"  # intact, untrusted
    export_bundle(root / "pop", tmp_path / "expired.popbundle", key=signing_key(expired_key, expired, ca))
    with pytest.raises(InputError, match="not trusted: expired at signing time"):
        read_bundle(tmp_path / "expired.popbundle", trust=[ca])


def test_a_folder_that_cannot_be_locked_is_still_read(tiny, monkeypatch):
    class Unwritable:  # a read-only install: the lock file cannot be created
        def __init__(self, *args, **kwargs):
            pass

        def acquire(self):
            raise PermissionError(13, "Permission denied")

    root, paths = tiny
    digest = Population.open(root / "pop").digest
    monkeypatch.setattr(store, "FileLock", Unwritable)
    assert Population.open(root / "pop").digest == digest
    with pytest.raises(InputError, match="cannot lock the population for writing"):
        Population.open(root / "pop").add([paths[4]], names=["t4"], workers=1)
