"""Models named by Hugging Face id (``org/name[@revision]``), resolved from the local Hub cache only.

Auditors usually hold models as the ``huggingface_hub`` library downloaded
them: ``models--org--name/`` with content-addressed ``blobs/``, one
``snapshots/<commit>/`` folder of links per revision and ``refs/<branch>``
naming the commit.  :func:`resolve_model` turns an id into that snapshot
folder with ``huggingface_hub.snapshot_download(local_files_only=True)``:
never a network request, as if ``HF_HUB_OFFLINE=1``.  A path that exists on
disk always wins over an id spelled the same way.

The cache names every large (LFS) file's blob by its SHA-256, which the Hub
publishes as the file's object id; small files are git blobs named by their
git SHA-1.  :func:`blob_checks` compares both with the bytes actually audited,
so anyone can check the audited files against the Hub's published ids.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from audit.errors import InputError
from audit.files import check_name

MODEL_ID = re.compile(r"(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?")
READ_PATTERNS = ["*.safetensors", "*.json", "tokenizer.model", "*.gguf"]  # what a checkpoint reads
LFS_BLOB = re.compile(r"[0-9a-f]{64}")
GIT_BLOB = re.compile(r"[0-9a-f]{40}")
GIT_BLOB_MAX = 64 << 20  # git-stored files are small; anything larger is not hashed a second time


@dataclass(frozen=True)
class HubSource:
    """Where a checkpoint came from in the Hub cache: repository, revision asked for, commit, blob of each file."""

    repo_id: str
    revision: str  # as asked ("main" when none was given)
    commit: str
    snapshot: Path
    blobs: Mapping[str, str]  # file (relative to the snapshot) -> blob name


def hub_cache_dir() -> Path:
    """The Hub cache folder, found as ``huggingface_hub`` finds it (read at each call, not at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def parse_model_id(text: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` if ``text`` is spelled like a Hub model id, else None."""
    match = MODEL_ID.fullmatch(str(text))
    return (match["repo"], match["revision"]) if match else None


def default_member_name(spec: str | Path) -> str:
    """A population member name for ``spec``: a folder's name, or ``org--name`` (``--revision``) for a Hub id."""
    path = check_name(spec)
    parsed = None if path.exists() else parse_model_id(str(spec))
    if parsed is None:
        return path.resolve().name
    repo_id, revision = parsed
    return repo_id.replace("/", "--") + (f"--{revision.replace('/', '-')}" if revision else "")


def resolve_model(spec: str | Path) -> tuple[Path, HubSource | None]:
    """The local path of ``spec``: itself if it exists, else its snapshot in the local Hub cache.

    Raises :class:`InputError` (one line) when ``spec`` is neither an
    existing path nor a model id present in the cache.
    """
    path = Path(spec)
    if path.exists():
        return path, None
    parsed = parse_model_id(str(spec))
    if parsed is None:
        raise InputError(f"{spec}: no such file or directory")
    repo_id, revision = parsed
    cache = hub_cache_dir()
    from huggingface_hub import snapshot_download  # heavy; only for model ids

    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True,
                                          allow_patterns=READ_PATTERNS))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        incomplete = "incomplete" in first
        raise InputError(
            f"{spec}: no such file or directory, and {'its snapshot in' if incomplete else 'not a model in'} the "
            f"local Hugging Face cache {cache}{' is incomplete' if incomplete else ''} (the audit never downloads: "
            f"fetch it first, e.g. `hf download {repo_id}{' --revision ' + revision if revision else ''}`)"
        ) from None
    blobs = {}
    for file in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        target = Path(os.path.realpath(file))
        if target.parent.name == "blobs":
            blobs[file.relative_to(snapshot).as_posix()] = target.name
    return snapshot, HubSource(repo_id, revision or "main", snapshot.name, snapshot, blobs)


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file: SHA-1 of ``blob <size>\\0`` and the bytes."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def blob_checks(source: HubSource, sha256: Mapping[str, str | None]) -> dict[str, dict]:
    """Per audited file: its blob, whether it is an LFS object, and whether the audited bytes match the blob's name.

    LFS blobs are named by the SHA-256 of their content, so the check reuses the
    hash already computed for the manifest; git blobs are named by git's SHA-1,
    computed here (they are small).  A file not hashed (None) is not checked.
    """
    checks = {}
    for name in sorted(sha256):
        blob = source.blobs.get(name)
        if blob is None:
            checks[name] = {"blob": None, "lfs": False, "matches": None}
        elif LFS_BLOB.fullmatch(blob):
            checks[name] = {"blob": blob, "lfs": True, "matches": None if sha256[name] is None else sha256[name] == blob}
        elif sha256[name] is not None and GIT_BLOB.fullmatch(blob) and (source.snapshot / name).stat().st_size <= GIT_BLOB_MAX:
            checks[name] = {"blob": blob, "lfs": False, "matches": git_blob_sha1(source.snapshot / name) == blob}
        else:
            checks[name] = {"blob": blob, "lfs": False, "matches": None}
    return checks


def hub_record(source: HubSource, sha256: Mapping[str, str | None]) -> dict:
    """What the results and the report record about a model read from the Hub cache."""
    files = blob_checks(source, sha256)
    lfs = [check for check in files.values() if check["lfs"]]
    return {"repo_id": source.repo_id, "revision": source.revision, "commit": source.commit,
            "lfs_files": len(lfs), "lfs_verified": sum(1 for c in lfs if c["matches"]),
            "mismatched": sorted(name for name, c in files.items() if c["matches"] is False), "files": files}
