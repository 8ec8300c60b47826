"""Shared fixtures: small checkpoints written on the fly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from audit.cli import main


def raw_safetensors(header: dict | bytes, data: bytes = b"", header_len: int | None = None) -> bytes:
    """Bytes of a (possibly malformed) safetensors file, for bad-input tests."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if header_len is None else header_len) + body + data


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""

    def run(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
