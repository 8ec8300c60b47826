"""One seed drives every random choice, through named streams.

A stream is a pure function of the master seed and a key (method name, role,
layer, shape, ...), hashed with SHA-256, so adding a method or a layer never
shifts another stream, no global state is touched, and the sampled positions
of a stored fingerprint can be recomputed by anyone from the seed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def _digest(seed: int, key: tuple) -> bytes:
    payload = json.dumps([int(seed), *key], separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).digest()


def derive_seed(seed: int, *key: object) -> int:
    """A 63-bit integer seed for stream ``key`` (stored in results so a run can be replayed)."""
    return int.from_bytes(_digest(seed, key)[:8], "little") >> 1


def generator(seed: int, *key: object) -> np.random.Generator:
    """A numpy Generator for stream ``key``."""
    words = np.frombuffer(_digest(seed, key), dtype="<u4")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def seeded_subset(n: int, k: int, seed: int, *key: object) -> np.ndarray:
    """``min(n, k)`` sorted distinct indices of ``range(n)``, a pure function of seed and key.

    Built from PCG64's raw 64-bit stream (whose bits numpy keeps stable across
    versions) rather than ``Generator.choice``, whose algorithm may change.
    """
    if k >= n:
        return np.arange(n, dtype=np.int64)
    words = np.frombuffer(_digest(seed, key), dtype="<u4")
    raw = np.random.PCG64(np.random.SeedSequence(words)).random_raw(n)
    return np.sort(np.argsort(raw, kind="stable")[:k]).astype(np.int64)


def hash_rank(seed: int, tokens: list[str]) -> np.ndarray:
    """A seeded pseudo-random 64-bit rank per token string (consistent sampling).

    Two vocabularies that share a token give it the same rank, so keeping the
    k lowest-ranked tokens of each model keeps (mostly) the same shared tokens.
    """
    prefix = str(int(seed)).encode() + b"\x00"
    return np.array(
        [int.from_bytes(hashlib.blake2b(prefix + t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
         for t in tokens],
        dtype=np.uint64,
    )
