"""A model checkpoint: its files, lazy tensors, config and tokenizer.

Accepted layouts: one ``.safetensors`` file; a directory holding
``model.safetensors``; a directory of shards with ``model.safetensors.index.json``
(or, lacking an index, several ``.safetensors`` files whose union is the model);
a GGUF file, or a split GGUF given by any of its shards or by its folder.
``config.json`` and the tokenizer (``tokenizer.json`` or SentencePiece
``tokenizer.model``) beside the weights are read and hashed when present.
Pickled checkpoints are refused, never unpickled.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from audit import schema
from audit.checkpoint.hashing import FileHash, HashCache, HashJob
from audit.checkpoint.gguf_file import GGUFFile, check_split, gguf_set_in, looks_like_gguf, split_shards
from audit.checkpoint.hub import HubSource, resolve_model
from audit.checkpoint.safetensors_file import (
    PICKLE_SUFFIXES,
    SafetensorsFile,
    pickle_refusal,
)
from audit.checkpoint.tensor import StoredTensor
from audit.checkpoint.vocabulary import Vocabulary, read_vocabulary_in
from audit.errors import InputError, shown
from audit.files import LIMITS, check_name, is_regular, read_json_file, require_regular, resolved, status

INDEX_NAME = "model.safetensors.index.json"
MAX_MODEL_TENSORS = 1_000_000  # across all shards; a 1T-parameter MoE release has ~70,000
SIDE_FILES = {"config.json": "config", "tokenizer.json": "tokenizer", "tokenizer.model": "tokenizer"}


@dataclass(frozen=True)
class InputFile:
    """A file the audit read: where it is, its size and its part in the model."""

    path: Path
    size: int
    role: str  # "weights", "index", "config", "tokenizer"

    @cached_property
    def resolved(self) -> Path:
        """The file actually read (symlinks resolved: a Hub cache snapshot links into ``blobs/``)."""
        return resolved(self.path)


class Checkpoint:
    """The tensors of one model, memory-mapped and validated, nothing loaded."""

    def __init__(self, path: Path, shards: list[Path], index: Path | None = None, weight_map: dict | None = None) -> None:
        self.path = path
        self.directory = path if path.is_dir() else path.parent
        self.warnings: list[str] = []
        self._hashing: HashJob | None = None
        self.source: HubSource | None = None  # set when opened by Hub model id
        self._weight_files = self._open_weights(shards)
        gguf = self._weight_files[0] if isinstance(self._weight_files[0], GGUFFile) else None
        self.gguf: GGUFFile | None = gguf  # a GGUF (its first shard, if split) holds the config and vocabulary
        self.tensors: dict[str, StoredTensor] = self._collect(index, weight_map or {})
        if index is None and not path.is_dir() and is_regular(self.directory / INDEX_NAME):
            self.warnings.append(f"{path.name} may be one shard of a sharded model; pass the directory to read all shards")
        # Present side files are read, so one that is a FIFO, device or folder is refused, not skipped.
        side = {} if gguf else {name: self.directory / name for name in SIDE_FILES if status(self.directory / name, name) is not None}
        self.config: dict | None = gguf.config if gguf else self._load_config(side.get("config.json"))
        self.files: tuple[InputFile, ...] = tuple(
            [InputFile(f.path, f.size, "weights") for f in self._weight_files]
            + ([InputFile(index, require_regular(index, "index").st_size, "index")] if index else [])
            + [InputFile(p, require_regular(p, name).st_size, SIDE_FILES[name]) for name, p in side.items()]
        )

    def _open_weights(self, shards: list[Path]) -> list[GGUFFile | SafetensorsFile]:
        """Each weight file opened (header validated), with the model's tensor count bounded as they come."""
        opened, count = [], 0
        for shard in shards:
            # the shards of a split GGUF after the first take the model's metadata from it
            opened.append(GGUFFile(shard, head=opened[0] if opened else None) if _is_gguf(shard) else SafetensorsFile(shard))
            count += len(opened[-1].entries)
            if count > MAX_MODEL_TENSORS:
                raise InputError(f"{self.path}: more than {MAX_MODEL_TENSORS:,} tensors across {len(opened)} weight files "
                                 "(the largest real models hold ~100,000); corrupted or hostile")
        if isinstance(opened[0], GGUFFile):
            check_split(opened)
        return opened

    def _collect(self, index: Path | None, weight_map: dict) -> dict[str, StoredTensor]:
        tensors: dict[str, StoredTensor] = {}
        for weights in self._weight_files:
            for name, entry in weights.entries.items():
                if name in tensors:
                    raise InputError(
                        f"duplicate tensor '{shown(name)}' in {tensors[name].file.path.name} and {weights.path.name}"
                    )
                tensors[name] = StoredTensor(entry, weights)
        if index is not None:
            for name, shard in weight_map.items():
                if name not in tensors or tensors[name].file.path.name != PurePosixPath(shard).name:
                    raise InputError(f"{index.name} lists tensor '{shown(name)}' in {shown(shard)}, but {shown(shard)} does not contain it")
            extra = sorted(set(tensors) - set(weight_map))
            if extra:
                self.warnings.append(f"{len(extra)} tensor(s) in the shards are not listed in {index.name}, e.g. '{shown(extra[0])}'")
        if not tensors:
            raise InputError(f"{self.path}: the checkpoint holds no tensors")
        return dict(sorted(tensors.items()))

    @staticmethod
    def _load_config(path: Path | None) -> dict | None:
        if path is None:
            return None
        return schema.config(read_json_file(path, limit=LIMITS["config"], what="config.json"), path)

    @cached_property
    def vocabulary(self) -> Vocabulary | None:
        """The tokenizer's tokens in id order (tokenizer.json, else tokenizer.model, or GGUF's own), or None."""
        return self.gguf.vocabulary if self.gguf else read_vocabulary_in(self.directory)

    @property
    def gguf_tensor_types(self) -> dict[str, str]:
        """Tensor name -> GGML storage type, across every shard of a GGUF (empty for safetensors)."""
        return {name: kind for weights in self._weight_files if isinstance(weights, GGUFFile)
                for name, kind in weights.tensor_types.items()}

    @property
    def vocab(self) -> dict[str, int] | None:
        """Token string -> id, or None without a tokenizer."""
        return None if self.vocabulary is None else self.vocabulary.ids

    def tensor(self, name: str) -> StoredTensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise InputError(f"{self.path}: no tensor named '{shown(name)}'") from None

    def start_hashing(self, *, cache: HashCache | None = None) -> None:
        """Start hashing every file on background threads (once); reading tensors meanwhile is fine.

        Without ``cache`` every file is hashed fresh.  :meth:`hashes` waits for the result.
        """
        if self._hashing is None:
            self._hashing = HashJob([f.path for f in self.files], cache=cache)

    def hashes(self) -> dict[str, FileHash]:
        """File name (relative to the checkpoint directory) -> SHA-256 and whether it came from the cache."""
        self.start_hashing()
        found = self._hashing.result()
        return {str(f.path.relative_to(self.directory)): found[f.path] for f in self.files}

    def file_hashes(self) -> dict[str, str]:
        """File name (relative to the checkpoint directory) -> SHA-256."""
        return {name: h.sha256 for name, h in self.hashes().items()}

    def resolved_paths(self) -> dict[str, str]:
        """File name (relative to the checkpoint directory) -> the absolute path actually read, symlinks resolved."""
        return {str(f.path.relative_to(self.directory)): str(f.resolved) for f in self.files}

    def close(self) -> None:
        if self._hashing is not None:
            self._hashing.cancel()
        for weights in self._weight_files:
            weights.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, tensors={len(self.tensors)}, files={len(self._weight_files)})"


def _refuse_if_pickled(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise pickle_refusal(path)


def _shards_from_index(index: Path) -> tuple[list[Path], Path, dict]:
    weight_map = schema.weight_map(read_json_file(index, limit=LIMITS["index"], what="shard index"), index)
    shards = []
    for shard in sorted(set(weight_map.values())):
        relative = PurePosixPath(shard)
        if relative.is_absolute() or ".." in relative.parts:
            raise InputError(f"{index}: shard path '{shown(shard)}' leaves the checkpoint directory")
        candidate = check_name(index.parent / relative)
        if status(candidate, "shard") is None:
            raise InputError(f"{index.name} names shard '{shown(shard)}', which does not exist in {index.parent}")
        require_regular(candidate, "shard")
        _refuse_if_pickled(candidate)
        shards.append(candidate)
    return shards, index, weight_map


def _is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" or looks_like_gguf(path)


def _layout(path: Path, found: os.stat_result) -> tuple[list[Path], Path | None, dict | None]:
    """The weight files, the index and its weight map (if any) of a checkpoint path."""
    if not stat.S_ISDIR(found.st_mode):
        require_regular(path, "checkpoint")
        if path.name.endswith(".index.json"):
            return _shards_from_index(path)
        _refuse_if_pickled(path)
        return (split_shards(path) if _is_gguf(path) else [path]), None, None
    index = path / INDEX_NAME
    if status(index, "shard index") is not None:
        return _shards_from_index(index)
    if status(path / "model.safetensors", "checkpoint") is not None:
        require_regular(path / "model.safetensors", "checkpoint")
        return [path / "model.safetensors"], None, None
    shards = sorted(p for p in path.glob("*.safetensors") if is_regular(p))
    if shards:
        return shards, None, None
    ggufs = gguf_set_in(path)
    if ggufs:
        return ggufs, None, None
    pickled = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise pickle_refusal(pickled[0])
    raise InputError(f"{path}: no weights found (expected model.safetensors, {INDEX_NAME}, *.safetensors, "
                     "one *.gguf or one split GGUF's shards)")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint lazily; raise :class:`InputError` with one line if unusable.

    ``path`` is a file or folder, or a Hugging Face model id ``org/name[@revision]``
    found in the local Hub cache (a path that exists wins); the checkpoint's
    ``source`` then records the repository and commit.
    """
    path, source = resolve_model(check_name(path))
    found = status(path, "checkpoint")
    if found is None:
        raise InputError(f"{shown(path, 300)}: no such file or directory")
    checkpoint = Checkpoint(path, *_layout(path, found))
    checkpoint.source = source
    return checkpoint
