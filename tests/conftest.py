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


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Seven independent random models in a population, a noisy copy of the first, and a stranger."""
    from audit.baselines import Population
    from audit.testing.synth import Dims, make_checkpoint

    dims = Dims(layers=4, hidden=32, mlp=64, heads=4, vocab=40)
    root = tmp_path_factory.mktemp("world")
    paths = [make_checkpoint(root / f"m{i}", "llama", dims, seed=100 + i, tokenizer=True).path for i in range(WORLD_MEMBERS)]
    population = Population.open_or_create(root / "population", name="synthetic", seed=3)
    population.add(paths, workers=1, source="audit.testing.synth", licence="CC0", notes="independent random inits")
    suspect = make_checkpoint(root / "suspect", "llama", dims, seed=100, perturb=(7, 0.3), tokenizer=True).path  # m0 + noise
    stranger = make_checkpoint(root / "stranger", "llama", dims, seed=999, tokenizer=True).path
    return root, paths, suspect, stranger


WORLD_MEMBERS = 7
