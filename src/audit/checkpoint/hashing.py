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


def listing_digest(files: dict[str, str]) -> str:
    """One digest for a whole model: SHA-256 of its ``sha256sum``-style file listing."""
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()
