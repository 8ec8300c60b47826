"""Streamed SHA-256 of input files, for the manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from audit.errors import InputError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so memory stays flat."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from None
