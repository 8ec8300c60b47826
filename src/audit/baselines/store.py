"""The population folder on disk: one writer at a time, all-or-nothing commits, checked reads.

A commit writes every new file under a *staged* name that carries its
SHA-256 (``.KIND.npz.<sha256>.staged``), then replaces ``population.json``
atomically: that rename is the commit point.  :func:`settle` then gives each
staged file its final name when the manifest records its digest, and deletes
everything else a writer leaves behind (staged files of a commit that never
happened, :mod:`audit.atomic` temporaries, member folders the manifest does
not name).  The same :func:`settle` runs at the next open under the lock, so a
writer killed at any instant leaves either the old population or the new
one, never a mixture, and no debris once the folder is next opened.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from filelock import FileLock, Timeout

from audit.atomic import write_atomic
from audit.errors import InputError
from audit.files import LIMITS, read_file, status

MANIFEST = "population.json"
PAIRS = "pairs.json"
MODELS = "models"
LOCK = ".population.lock"
LOCK_TIMEOUT_S = 600.0
_STAGED = re.compile(r"^\.(?P<target>.+)\.(?P<sha>[0-9a-f]{64})\.staged$")
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # audit.atomic's temporaries
_OWN_FILES = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.npz$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def locked(root: Path, *, write: bool) -> Iterator[bool]:
    """Hold the population's lock; yield whether it is held.

    Writers need it (the folder is created if new).  Readers take it too, so
    they never see a commit half settled; a folder they may not write to (a
    read-only install) is read without it, since no writer can change it.
    """
    if write:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create population folder {root}: {exc.strerror or exc}") from None
    lock = FileLock(root / LOCK, timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(f"{root}: another process has held the population's lock for {LOCK_TIMEOUT_S:.0f} s "
                         f"({root / LOCK}); try again when it has finished") from None
    except OSError as exc:
        if write:
            raise InputError(f"{root}: cannot lock the population for writing: {exc.strerror or exc}") from None
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def staged_path(target: Path, data: bytes) -> Path:
    return target.with_name(f".{target.name}.{sha256(data)}.staged")


def stage(root: Path, files: Mapping[str, bytes]) -> None:
    """Write each file (relative path -> bytes) under its staged name, durably; nothing is visible yet."""
    for relative, data in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(staged_path(target, data), data)


def publish(staged: Path, target: Path) -> None:
    """Give a committed staged file its final name (atomic)."""
    os.replace(staged, target)


def settle(root: Path, expected: Mapping[str, str], members: set[str]) -> None:
    """Bring the folder in line with the committed manifest.

    ``expected`` maps each relative path the manifest records to its SHA-256,
    ``members`` are the member folder names.  Staged files the manifest
    records are published; all other staged files, temporaries, member folders
    not in the manifest and fingerprint files it does not record are removed.
    Files this tool does not write are never touched.
    """
    folders = [root, *(p for p in _subfolders(root / MODELS))]
    for folder in folders:
        member = folder.name if folder.parent == root / MODELS else None
        for path in list(folder.iterdir()):
            if not path.is_file() or path.is_symlink():
                continue
            relative = path.relative_to(root).as_posix()
            if match := _STAGED.match(path.name):
                target = path.with_name(match["target"])
                if expected.get(target.relative_to(root).as_posix()) == match["sha"]:
                    publish(path, target)
                else:
                    path.unlink()
            elif _TEMPORARY.match(path.name):
                path.unlink()
            elif member is not None and _OWN_FILES.match(path.name) and (
                    member not in members or relative not in expected):
                path.unlink()
        if member is not None and member not in members:
            try:
                folder.rmdir()
            except OSError:  # something we did not write is inside: leave it
                pass


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink()) if path.is_dir() else []


def read_checked(root: Path, relative: str, expected: str) -> bytes:
    """The bytes of a recorded file, refused (one line) when missing or not what the manifest recorded."""
    path = root / relative
    if status(path, "population") is None:
        raise InputError(f"{path}: missing, but {MANIFEST} records it; the population is incomplete")
    data = read_file(path, limit=LIMITS["pairs" if relative == PAIRS else "fingerprint"], what="population")
    if sha256(data) != expected:
        raise InputError(f"{path}: SHA-256 differs from the one {MANIFEST} records; the file was changed or "
                         "corrupted (restore it, or rebuild the population)")
    return data


def is_empty_folder(root: Path) -> bool:
    """True for a missing folder, or one holding nothing but this tool's lock, debris and empty folders."""
    if not root.exists():
        return True
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        if path.name != LOCK and not _STAGED.match(path.name) and not _TEMPORARY.match(path.name):
            return False
    return True
