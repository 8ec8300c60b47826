"""Corpus, shards, tokenizer and batch sampling for the reference zoo.

Corpus: the *.py source files of this interpreter's standard library (site-packages and test
directories excluded). Every file is assigned by SHA-256 of its relative path to one of two
disjoint shards, and within its shard to the train split or to the held-out split (5%).

Tokenizer: byte level, restricted to the bytes (printable ASCII, \\n, \\t) that occur at least
MIN_COUNT times in the train split of EVERY shard, plus one <unk> id for all other bytes.
So every embedding row is exercised during training of every model (no untrained rows that
keep their initial values).
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_SHARDS = 2
HELDOUT_BUCKETS = 20  # 1 in 20 files of each shard is held out
MIN_COUNT = 100
UNK = "<unk>"
EXCLUDED_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _path_hash(rel: str) -> int:
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")


def assign(rel: str) -> tuple[int, bool]:
    """(shard, is_heldout) for a relative path, a pure function of the path."""
    h = _path_hash(rel)
    return h % N_SHARDS, (h // N_SHARDS) % HELDOUT_BUCKETS == 0


@dataclass
class FileSet:
    name: str
    files: list[tuple[str, bytes]] = field(default_factory=list)  # sorted (relpath, content)

    def sha256(self) -> str:
        h = hashlib.sha256()
        for rel, data in self.files:
            h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()

    def stream(self) -> bytes:
        return b"\n\n".join(data for _, data in self.files)

    def summary(self) -> dict:
        return {"n_files": len(self.files), "n_bytes": sum(len(d) for _, d in self.files),
                "sha256": self.sha256()}


class Corpus:
    def __init__(self, root: Path | None = None):
        self.root = root or stdlib_root()
        rels = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*.py")
            if not (set(p.relative_to(self.root).parts[:-1]) & EXCLUDED_DIRS)
        )
        self.sets: dict[str, FileSet] = {}
        for s in range(N_SHARDS):
            self.sets[f"shard{s}"] = FileSet(f"shard{s}")
            self.sets[f"shard{s}-heldout"] = FileSet(f"shard{s}-heldout")
        for rel in rels:
            shard, held = assign(rel)
            key = f"shard{shard}" + ("-heldout" if held else "")
            self.sets[key].files.append((rel, (self.root / rel).read_bytes()))

    def narrow(self, package: str) -> FileSet:
        """Train-split files (of any shard) inside one stdlib package, e.g. 'email'."""
        fs = FileSet(f"narrow:{package}")
        for s in range(N_SHARDS):
            fs.files += [(r, d) for r, d in self.sets[f"shard{s}"].files
                         if r.startswith(package + "/")]
        fs.files.sort()
        return fs

    def build_vocab(self) -> tuple[list[int], dict]:
        cand = [9, 10] + list(range(32, 127))
        counts = {}
        for s in range(N_SHARDS):
            data = np.frombuffer(self.sets[f"shard{s}"].stream(), dtype=np.uint8)
            counts[s] = np.bincount(data, minlength=256)
        keep = [b for b in cand if all(counts[s][b] >= MIN_COUNT for s in counts)]
        stats = {f"shard{s}_min_kept_count": int(min(counts[s][b] for b in keep)) for s in counts}
        stats.update({f"shard{s}_unk_fraction": float(1 - counts[s][keep].sum() / counts[s].sum())
                      for s in counts})
        return keep, stats

    def describe(self) -> dict:
        return {
            "source": "CPython standard library *.py files (site-packages and test dirs excluded)",
            "stdlib_path": str(self.root),
            "python_version": sys.version.split()[0],
            "python_implementation": sys.implementation.name,
            "split_rule": ("sha256(relative path)[:8] as big-endian int h; shard = h % 2; "
                           f"held out iff (h // 2) % {HELDOUT_BUCKETS} == 0"),
            "file_join": "files sorted by relative path, joined with b'\\n\\n'",
            "fileset_sha256_rule": "sha256 over sorted files of relpath + b'\\0' + sha256(content)",
            "sets": {k: v.summary() for k, v in self.sets.items()},
        }


class ByteTokenizer:
    def __init__(self, kept_bytes: list[int]):
        self.kept = list(kept_bytes)
        self.unk_id = len(self.kept)
        self.vocab_size = len(self.kept) + 1
        self.table = np.full(256, self.unk_id, dtype=np.int64)
        for i, b in enumerate(self.kept):
            self.table[b] = i

    def encode(self, data: bytes) -> np.ndarray:
        return self.table[np.frombuffer(data, dtype=np.uint8)]

    def token_strings(self) -> list[str]:
        return [chr(b) for b in self.kept] + [UNK]

    def hf_json(self) -> dict:
        vocab = {s: i for i, s in enumerate(self.token_strings())}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": self.unk_id, "content": UNK, "single_word": False,
                              "lstrip": False, "rstrip": False, "normalized": False,
                              "special": True}],
            "normalizer": None,
            # one token per character (every kept byte is ASCII); non-ASCII -> <unk> per byte
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                              "behavior": "Isolated", "invert": False},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.hf_json(), indent=1, ensure_ascii=False) + "\n")


class Sampler:
    """Random windows of seq_len+1 tokens from one token stream, driven by a numpy seed.
    Two samplers with the same seed over the same stream give identical batches."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch: int, seed: int):
        self.tokens, self.seq_len, self.batch = tokens, seq_len, batch
        self.rng = np.random.default_rng(seed)

    def next(self) -> np.ndarray:
        starts = self.rng.integers(0, len(self.tokens) - self.seq_len - 1, size=self.batch)
        return np.stack([self.tokens[s:s + self.seq_len + 1] for s in starts])


def fixed_batch(tokens: np.ndarray, seq_len: int, n: int, seed: int) -> np.ndarray:
    return Sampler(tokens, seq_len, n, seed).next()
