"""Streamed SHA-256 of input files, for the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from audit.errors import InputError
from audit.files import open_regular


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so memory stays flat."""
    try:
        with open_regular(path, what="input") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read for hashing: {exc.strerror or exc}") from None


def listing_digest(files: dict[str, str]) -> str:
    """One digest for a whole model: SHA-256 of its ``sha256sum``-style file listing."""
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


CONTENT_CHUNK = 1 << 24  # 16 MiB of a tensor hashed at a time: memory stays flat


def tensor_content_digest(tensors: Iterable[Any]) -> str:
    """Hex SHA-256 of a model's tensors, whatever files hold them: its identity as a population member.

    Sharded or single-file, with or without tokenizer and config, the same
    weights give the same digest; a file hash would not.  ``tensors`` are
    stored tensors (``name``, ``dtype``, ``shape``, ``raw()``); they are
    hashed in name order, each as one line ``name dtype shape nbytes`` (JSON
    encoded, so no name can forge a boundary) followed by its bytes as stored.
    """
    digest = hashlib.sha256(b"audit-tensor-content v1\n")
    for tensor in sorted(tensors, key=lambda t: t.name):
        data = tensor.raw().reshape(-1).view(np.uint8)
        line = json.dumps([tensor.name, tensor.dtype, list(tensor.shape), int(data.size)], ensure_ascii=True)
        digest.update(line.encode() + b"\n")
        release = getattr(getattr(tensor, "file", None), "release", None)  # drop mapped pages once hashed
        for start in range(0, data.size, CONTENT_CHUNK):
            stop = min(data.size, start + CONTENT_CHUNK)
            digest.update(data[start:stop])
            if release is not None:
                release(tensor.entry, start, stop)
    return digest.hexdigest()
