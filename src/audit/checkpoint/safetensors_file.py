"""Validated, memory-mapped access to one ``.safetensors`` file.

We parse the header ourselves instead of going through ``safetensors.safe_open``
because the methods need lazy, zero-copy access to row blocks and sampled
elements of bf16/float8 tensors (which the library's numpy API cannot give),
and because every malformed file must produce one precise sentence saying what
is wrong.  The checks follow the format's rules: 8-byte little-endian header
length, a JSON object header, and data offsets that tile the data section
exactly, with no overlap, no hole and nothing outside it.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from audit.checkpoint.dtypes import DTYPES, ITEMSIZE, stored_dtype
from audit.errors import InputError, shown
from audit.files import open_regular, parse_json

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
# Bounds checked before a header is parsed or its entries built, so a hostile
# header (1.28 M empty tensors in 100 MB) fails in a fraction of a second and a
# few hundred MB instead of 35 s and 1.45 GB.  Real checkpoints are far below:
# a 671B MoE model has ~92 k tensors across all its shards.
MAX_TENSORS = 250_000
MAX_NAME_CHARS = 1024  # real tensor names are under 200 characters
MAX_RANK = 16
HEADER_CHUNK = 4 << 20  # header bytes read (and their JSON objects counted) at a time
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})


def pickle_refusal(path: Path) -> InputError:
    """The error for a pickled checkpoint: never unpickle, say how to convert."""
    return InputError(
        f"{path}: pickled PyTorch checkpoint refused (unpickling can execute arbitrary code). "
        "Convert it once, in a sandbox you trust, with: python -c \"import torch, safetensors.torch as st; "
        f"st.save_file(torch.load('{path.name}', weights_only=True), 'model.safetensors')\""
    )


def looks_pickled(head: bytes) -> bool:
    """True for a zip archive (``torch.save``) or a raw pickle stream.

    ``head`` is the first 9 bytes.  A safetensors header length can begin with
    the pickle protocol bytes too, but its JSON then opens with ``{``.
    """
    if head.startswith(b"PK\x03\x04"):
        return True
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[8:9] != b"{"



_OPEN: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # parsed weight files in this process, by identity


def _identity(path: Path) -> tuple:
    stat = os.stat(path)
    return (os.fspath(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def remember_open(weights: object) -> None:
    """Record a parsed weight file (with a ``path``) so :func:`already_open` finds it, in this process
    and in the workers forked from it."""
    _OPEN[_identity(weights.path)] = weights  # type: ignore[attr-defined]


def already_open(path: Path, kind: type) -> Any:
    """The ``kind`` parsed from ``path`` that this process already holds, if the file is unchanged, else None.

    A forked worker unpickles its tasks' files through this: it reuses the
    file it inherited instead of parsing the header again for every tensor.
    """
    try:
        found = _OPEN.get(_identity(path))
    except OSError:
        return None
    return found if isinstance(found, kind) else None


def _reopen(path: Path) -> SafetensorsFile:
    return already_open(path, SafetensorsFile) or SafetensorsFile(path)


def drop_pages(mapped: mmap.mmap, start: int, stop: int) -> None:
    """Tell the kernel the bytes [start, stop) of a read-only map are done with, so a
    large checkpoint read once does not stay resident (rounded down to a page)."""
    start -= start % mmap.PAGESIZE
    if stop > start:
        mapped.madvise(mmap.MADV_DONTNEED, start, stop - start)


def close_mapped(mapped: mmap.mmap | None) -> None:
    """Close a map; views still alive keep it open until they go, which is harmless."""
    if mapped is None:
        return
    try:
        mapped.close()
    except BufferError:
        pass

@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives inside its file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offset relative to the start of the data section
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise InputError(f"duplicate tensor '{shown(key)}' in the header")
        seen[key] = value
    return seen


class SafetensorsFile:
    """One safetensors file: its validated header and a read-only memory map."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with open_regular(self.path, what="safetensors") as handle:
                self.size = os.fstat(handle.fileno()).st_size
                head = handle.read(9)
                header_len = self._check_prefix(head)
                handle.seek(8)
                raw = self._read_header(handle, header_len)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self.data_start = 8 + header_len
        try:
            self.entries, self.metadata = self._parse_header(raw)
        except InputError as exc:
            raise InputError(f"{self.path}: {exc}") from None
        self._mmap: mmap.mmap | None = None
        remember_open(self)

    def __reduce__(self) -> tuple:
        """Pickled as its path: a worker reuses the parsed file it inherited (fork), else reopens (and
        re-validates) it; either way it maps the file itself."""
        return (_reopen, (self.path,))

    def _check_prefix(self, head: bytes) -> int:
        if self.size == 0:
            raise InputError(f"{self.path}: empty file (0 bytes), not a safetensors checkpoint")
        if looks_pickled(head):
            raise pickle_refusal(self.path)
        if self.size < 8:
            raise InputError(f"{self.path}: {self.size} bytes is too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len > MAX_HEADER_BYTES:
            raise InputError(
                f"{self.path}: header length {header_len} bytes is absurd (limit {MAX_HEADER_BYTES}); "
                "not a safetensors file, or corrupted"
            )
        if 8 + header_len > self.size:
            raise InputError(
                f"{self.path}: header length {header_len} bytes exceeds the file size {self.size} bytes "
                "(truncated or not a safetensors file)"
            )
        return header_len

    def _read_header(self, handle: BinaryIO, length: int) -> bytes:
        """The header's bytes, read in chunks and refused as soon as they hold too many JSON objects.

        Every tensor entry is a JSON object and '{' cannot be escaped, so the
        count of '{' bounds the entries: a hostile header is refused after a
        few MB, before it is held whole or parsed.
        """
        chunks, objects = [], 0
        while length > 0:
            chunk = handle.read(min(length, HEADER_CHUNK))
            if not chunk:
                break
            objects += chunk.count(b"{")
            if objects > MAX_TENSORS + 2:  # the header object and __metadata__ besides the entries
                raise InputError(f"{self.path}: the header describes more than {MAX_TENSORS:,} tensors (limit per file); "
                                 "corrupted or hostile")
            chunks.append(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def _parse_header(self, raw: bytes) -> tuple[dict[str, TensorEntry], dict[str, str]]:
        header = parse_json(raw, where=None, what="header", object_pairs_hook=_reject_duplicates)
        if not isinstance(header, dict):
            raise InputError("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise InputError("header field __metadata__ must be an object of strings")
        data_size = self.size - self.data_start
        entries = {name: self._parse_entry(name, spec, data_size) for name, spec in header.items()}
        self._check_tiling(entries, data_size)
        return dict(sorted(entries.items())), metadata

    @staticmethod
    def _parse_entry(name: str, spec: object, data_size: int) -> TensorEntry:
        if len(name) > MAX_NAME_CHARS:
            raise InputError(f"tensor '{shown(name, 60)}': a name of {len(name):,} characters (limit {MAX_NAME_CHARS})")
        name_shown = shown(name)
        if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
            raise InputError(f"tensor '{name_shown}': header entry needs dtype, shape and data_offsets")
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise InputError(f"tensor '{name_shown}': unknown dtype {shown(repr(dtype), 40)} (supported: {', '.join(DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise InputError(f"tensor '{name_shown}': shape {shown(repr(shape), 80)} is not a list of at most "
                             f"{MAX_RANK} non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise InputError(f"tensor '{name_shown}': data_offsets {shown(repr(offsets), 80)} must be two integers "
                             "0 <= begin <= end")
        entry = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])
        expected = entry.numel * ITEMSIZE[dtype]
        if entry.end - entry.begin != expected:
            raise InputError(
                f"tensor '{name_shown}': dtype {dtype} with shape {shown(list(shape), 80)} needs {shown(expected, 40)} bytes "
                f"but its data_offsets span {shown(entry.end - entry.begin, 40)}"
            )
        if entry.end > data_size:
            raise InputError(
                f"tensor '{name_shown}': data_offsets end at byte {shown(entry.end, 40)} but the data section holds only "
                f"{data_size} bytes (truncated file?)"
            )
        return entry

    @staticmethod
    def _check_tiling(entries: dict[str, TensorEntry], data_size: int) -> None:
        position, previous = 0, None
        for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
            if entry.end == entry.begin:  # empty tensors occupy no bytes
                continue
            if entry.begin < position:
                raise InputError(f"tensors '{shown(previous)}' and '{shown(entry.name)}' overlap in the data section")
            if entry.begin > position:
                raise InputError(f"bytes {position}..{entry.begin} of the data section belong to no tensor")
            position, previous = entry.end, entry.name
        if position != data_size:
            raise InputError(
                f"the data section holds {data_size} bytes but the tensors cover only {position} "
                "(trailing bytes or a corrupted header)"
            )

    def array(self, entry: TensorEntry, bits: bool = False) -> np.ndarray:
        """A zero-copy, read-only view of the stored tensor in its own dtype, or (``bits``) as
        unsigned integers of its width, which needs no ``ml_dtypes`` (see :func:`stored_dtype`)."""
        dtype = stored_dtype(entry.dtype, bits)
        if entry.numel == 0:
            return np.zeros(entry.shape, dtype=dtype)
        if self._mmap is None:
            with open_regular(self.path, what="safetensors") as handle:
                self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            if self._mmap_size_changed():
                raise InputError(f"{self.path}: file changed size while open")
        return np.frombuffer(
            self._mmap, dtype=dtype, count=entry.numel, offset=self.data_start + entry.begin
        ).reshape(entry.shape)

    def release(self, entry: TensorEntry, first_byte: int = 0, last_byte: int | None = None) -> None:
        """Drop this process's pages of a tensor's byte range (they stay in the page cache).

        Streaming a 100 GB checkpoint through one memory map would otherwise
        leave every touched page counted in our resident set; releasing each
        block after use keeps memory flat whatever the model size.
        """
        if self._mmap is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = self.data_start + entry.begin + first_byte
        stop = self.data_start + (entry.end if last_byte is None else entry.begin + last_byte)
        drop_pages(self._mmap, start, stop)

    def _mmap_size_changed(self) -> bool:
        return self._mmap is not None and len(self._mmap) != self.size

    def close(self) -> None:
        close_mapped(self._mmap)
        self._mmap = None

    def __repr__(self) -> str:
        return f"SafetensorsFile({os.fspath(self.path)!r}, tensors={len(self.entries)})"
