"""Lazy tensors and canonical views of them.

A :class:`StoredTensor` is one tensor as stored in a file (memory-mapped, never
read until asked).  A :class:`TensorView` is what a role points at: the stored
tensor in the canonical PyTorch ``Linear`` layout ``[out, in]``, possibly a
subset of its output rows (one part of a fused qkv or gate_up tensor), possibly
transposed (GPT-2's Conv1D stores ``[in, out]``).  Views read row blocks,
sampled elements or the whole matrix, always widened to float64 (or float32 on
request) before any arithmetic, and stream their moments so memory does not
grow with the tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from audit.checkpoint.dtypes import ITEMSIZE, is_float
from audit.checkpoint.safetensors_file import SafetensorsFile, TensorEntry
from audit.errors import InputError, NonFiniteError
from audit.parallel import fork_map

BLOCK_ELEMENTS = 1 << 22  # 4M elements: 32 MB per float64 block


@dataclass(frozen=True)
class StoredTensor:
    """A tensor inside a safetensors file; nothing is read until :meth:`raw`."""

    entry: TensorEntry
    file: SafetensorsFile

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def dtype(self) -> str:
        return self.entry.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.entry.shape

    @property
    def numel(self) -> int:
        return self.entry.numel

    @property
    def nbytes(self) -> int:
        return self.entry.end - self.entry.begin

    def raw(self, bits: bool = False) -> np.ndarray:
        """Zero-copy read-only memory-mapped array in the stored dtype (``bits``: as unsigned integers)."""
        return self.file.array(self.entry, bits)

    def view(self) -> TensorView:
        return TensorView(self)


NARROW_CHUNK = 1 << 19  # elements widened at a time: 2 MiB of float32 (per-call overhead is ~12 us; smaller chunks pay it too often)
NARROW_ROW = 256  # terms per float32 partial sum
PROCESS_BYTES = 1 << 28  # 256 MiB: below this, starting worker processes costs more than it saves


def narrow_sums(block: np.ndarray, *, bf16_bits: bool = False) -> tuple[float, float]:
    """Sum and sum of squares of a 16-bit-or-narrower float block, fast.

    Values are widened to float32 (exact; bf16 by a 16-bit shift of its bits,
    the cheapest widening there is), squared (exact for mantissas of at most
    11 bits), and summed in float32 rows of 256 terms whose partial sums are
    added in float64.  A float32 sum of 256 terms is off by at most
    256 * 2^-24 = 1.5e-5 of the sum of their magnitudes (about 1e-8 measured
    on weights); that is the price of running at several GB/s per core with
    numpy alone.  Every step is a fixed-order numpy loop, so the result is the
    same on every run.  Overflow, NaN and Inf come back as non-finite sums.
    ``bf16_bits``: ``block`` holds bf16 values as their uint16 bits.
    """
    flat = block.reshape(-1)
    bf16 = bf16_bits or flat.dtype.name == "bfloat16"  # by name: ml_dtypes is imported only by whoever made the array
    buffer = np.empty(_rows_for(min(flat.size, NARROW_CHUNK)) * NARROW_ROW, dtype=np.float32)
    partials = np.empty((2, _rows_for(flat.size)), dtype=np.float32)  # NARROW_CHUNK is a multiple of NARROW_ROW
    used = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, flat.size, NARROW_CHUNK):
            chunk = flat[start : start + NARROW_CHUNK]
            padded = _rows_for(chunk.size) * NARROW_ROW
            if bf16:
                widened = buffer.view(np.uint32)[: chunk.size]
                np.copyto(widened, chunk.view(np.uint16))
                np.left_shift(widened, 16, out=widened)
            else:
                np.copyto(buffer[: chunk.size], chunk, casting="unsafe")
            buffer[chunk.size : padded] = 0.0  # zeros add nothing to either sum
            rows = buffer[:padded].reshape(-1, NARROW_ROW)
            np.einsum("ij->i", rows, out=partials[0, used : used + len(rows)])
            np.einsum("ij,ij->i", rows, rows, out=partials[1, used : used + len(rows)])
            used += len(rows)
        total, squares = partials[:, :used].sum(axis=1, dtype=np.float64)
    return float(total), float(squares)


def _rows_for(elements: int) -> int:
    return -(-elements // NARROW_ROW)


def widened(block: np.ndarray, bf16_bits: bool = False) -> np.ndarray:
    """``block`` as float64 (exact); ``bf16_bits``: it holds bf16 values as their uint16 bits."""
    if bf16_bits:
        return (block.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.asarray(block, dtype=np.float64)


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations, merged exactly across blocks."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, block: np.ndarray, *, bf16_bits: bool = False) -> Moments:
        """Moments of one block, accumulated in float64 whatever the block's dtype.

        Blocks of 16-bit (or narrower) floats take the fast path of
        :func:`narrow_sums` when the mean does not dominate the spread
        (``mean^2 <= var``), where its float32 partial sums cost at most a few
        parts in 10^5 of the variance in the worst case and about 10^-8 in
        practice.  Everything else (wider dtypes, offset-dominated blocks such
        as norm gains, squares that overflow float32, NaN/Inf) uses the
        two-pass form in float64; NaN/Inf surface as a non-finite sum and the
        caller's check names the tensor.  ``bf16_bits``: ``block`` holds bf16
        values as their uint16 bits (what :meth:`TensorView.moments` reads).
        """
        if block.size == 0:
            return cls()
        if bf16_bits or (block.dtype.itemsize <= 2 and block.dtype.kind in "fV"):  # f16, bf16, f8
            total, squares = narrow_sums(block, bf16_bits=bf16_bits)
            if math.isfinite(squares):
                mean = total / block.size
                m2 = squares - total * mean
                if m2 >= total * mean:  # var >= mean^2: no harmful cancellation
                    return cls(block.size, mean, m2)
        wide = widened(block, bf16_bits)
        mean = float(wide.mean(dtype=np.float64))
        return cls(block.size, mean, float(np.square(wide - mean).sum(dtype=np.float64)))

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s pairwise update: stable for any block sizes."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        return Moments(count, mean, m2)

    def var(self, ddof: int = 0) -> float:
        if self.count - ddof <= 0:
            return math.nan
        return self.m2 / (self.count - ddof)

    def std(self, ddof: int = 0) -> float:
        return math.sqrt(self.var(ddof))


@dataclass(frozen=True)
class TensorView:
    """A stored tensor seen in canonical ``[out, in]`` layout.

    ``row_ranges`` selects output rows (half-open ranges in canonical row
    numbering) and is ``None`` for all rows; ``transposed`` marks tensors
    stored ``[in, out]``.  ``part`` names the selected part of a fused tensor.
    """

    source: StoredTensor
    transposed: bool = False
    row_ranges: tuple[tuple[int, int], ...] | None = None
    part: str | None = None

    def __post_init__(self) -> None:
        if not is_float(self.source.dtype):
            raise InputError(f"tensor '{self.source.name}' has dtype {self.source.dtype}; a float weight is needed")
        if self.transposed and len(self.source.shape) != 2:
            raise InputError(f"tensor '{self.source.name}' with shape {list(self.source.shape)} cannot be transposed")
        if self.row_ranges is not None:
            total = self._base_shape[0] if self._base_shape else 0
            for start, stop in self.row_ranges:
                if not 0 <= start < stop <= total:
                    raise InputError(
                        f"tensor '{self.source.name}': rows {start}..{stop} requested for {self.part or 'a part'} "
                        f"but it has {total} rows"
                    )

    @property
    def name(self) -> str:
        return self.source.name if self.part is None else f"{self.source.name}[{self.part}]"

    @property
    def _base_shape(self) -> tuple[int, ...]:
        shape = self.source.shape
        return (shape[1], shape[0]) if self.transposed else shape

    @property
    def _ranges(self) -> tuple[tuple[int, int], ...]:
        if self.row_ranges is not None:
            return self.row_ranges
        return ((0, self._base_shape[0]),) if self._base_shape else ()

    @property
    def shape(self) -> tuple[int, ...]:
        base = self._base_shape
        if self.row_ranges is None or not base:
            return base
        return (sum(stop - start for start, stop in self.row_ranges), *base[1:])

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of storage this view reads."""
        return self.numel * ITEMSIZE[self.source.dtype]

    def _base_rows(self, start: int, stop: int, bits: bool = False) -> np.ndarray:
        """Canonical rows ``start:stop`` of the whole stored tensor, stored dtype (``bits``: as unsigned integers)."""
        raw = self.source.raw(bits)
        return raw[:, start:stop].T if self.transposed else raw[start:stop]

    def _segments(self, max_elements: int) -> Iterator[tuple[int, int]]:
        """Base-row ranges of at most ``max_elements`` elements, in view order."""
        row_elems = max(1, math.prod(self._base_shape[1:]))
        step = max(1, max_elements // row_elems)
        for start, stop in self._ranges:
            for block_start in range(start, stop, step):
                yield block_start, min(stop, block_start + step)

    def blocks(self, dtype: type | None = np.float64, max_elements: int = BLOCK_ELEMENTS,
               bits: bool = False) -> Iterator[np.ndarray]:
        """Consecutive canonical row blocks (copies), widened to ``dtype`` (None: the stored dtype,
        or with ``bits`` its bits as unsigned integers)."""
        if not self._base_shape:
            yield np.array(self.source.raw(bits), dtype=dtype).reshape(())
            return
        row_bytes = math.prod(self._base_shape[1:]) * ITEMSIZE[self.source.dtype]
        for start, stop in self._segments(max_elements):
            block = np.array(self._base_rows(start, stop, bits), dtype=dtype)  # a copy: the pages can go
            if not self.transposed:
                self.source.file.release(self.source.entry, start * row_bytes, stop * row_bytes)
            yield block
        if self.transposed:
            self.source.file.release(self.source.entry)

    def _mapped_blocks(self, max_elements: int = BLOCK_ELEMENTS, bits: bool = False) -> Iterator[np.ndarray]:
        """Like :meth:`blocks` in the stored dtype, but zero-copy views of the map (for reductions)."""
        if not self._base_shape or self.transposed:
            yield from self.blocks(None, max_elements, bits)
            return
        row_bytes = math.prod(self._base_shape[1:]) * ITEMSIZE[self.source.dtype]
        for start, stop in self._segments(max_elements):
            yield self._base_rows(start, stop, bits)
            self.source.file.release(self.source.entry, start * row_bytes, stop * row_bytes)

    def read(self, dtype: type = np.float64) -> np.ndarray:
        """The whole view as one array (only for tensors a method must hold)."""
        parts = list(self.blocks(dtype))
        if not self._base_shape:
            return parts[0]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def read_rows(self, start: int, stop: int, dtype: type = np.float64) -> np.ndarray:
        """Canonical rows ``start:stop`` of this view."""
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"rows {start}:{stop} outside {self.shape[0]} rows of {self.name}")
        base = self._to_base_rows(np.arange(start, stop))
        pieces = [np.asarray(self._base_rows(int(a), int(b)), dtype=dtype) for a, b in _runs(base)]
        self.source.file.release(self.source.entry)
        if not pieces:
            return np.zeros((0, *self.shape[1:]), dtype=dtype)
        return np.concatenate(pieces, axis=0)

    def _to_base_rows(self, rows: np.ndarray) -> np.ndarray:
        starts = np.array([a for a, _ in self._ranges], dtype=np.int64)
        lengths = np.array([b - a for a, b in self._ranges], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        which = np.searchsorted(offsets, rows, side="right") - 1
        return starts[which] + (rows - offsets[which])

    def sample(self, positions: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """Elements at flat positions of the canonical view (C order), as ``dtype``.

        Only the pages holding those elements are touched.
        """
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.numel):
            raise IndexError(f"sample positions outside the {self.numel} elements of {self.name}")
        raw = self.source.raw()
        if len(self.shape) == 1:
            values = raw[self._to_base_rows(positions)]
        else:
            rows, within = np.divmod(positions, math.prod(self.shape[1:]))
            base_rows = self._to_base_rows(rows)
            values = raw[within, base_rows] if self.transposed else raw.reshape(raw.shape[0], -1)[base_rows, within]
        self.source.file.release(self.source.entry)
        return np.asarray(values, dtype=dtype)

    def moments(self, check_finite: bool = True) -> Moments:
        """Streaming moments of every element, accumulated in float64; raises on NaN/Inf.

        bf16 is read as its bits (see :func:`audit.checkpoint.dtypes.stored_dtype`): same numbers, no ``ml_dtypes``.
        """
        bits = self.source.dtype == "BF16"
        total = Moments()
        for block in self._mapped_blocks(bits=bits):
            part = Moments.of(block, bf16_bits=bits)
            if check_finite and not (math.isfinite(part.mean) and math.isfinite(part.m2)):
                require_finite(widened(block, bits), self.name)
            total = total.merge(part)
        return total

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteError` naming this tensor if it holds NaN/Inf."""
        for block in self.blocks(np.float64):
            require_finite(block, self.name)


def require_finite(values: np.ndarray, name: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        raise NonFiniteError(name, int(finite.size - np.count_nonzero(finite)))


def _runs(indices: np.ndarray) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive integers as half-open ranges."""
    if indices.size == 0:
        return
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    for chunk in np.split(indices, breaks):
        yield int(chunk[0]), int(chunk[-1]) + 1


def moments_of(views: list[TensorView], workers: int | None = None, min_bytes: int | None = None, *,
               meanwhile: Callable[[], object] | None = None) -> list[Moments]:
    """:meth:`TensorView.moments` of many tensors, on worker processes when that pays.

    The reductions are many short numpy calls, which threads cannot overlap
    (measured: two threads no faster than one), so sets of ``min_bytes`` or
    more go to forked processes, one tensor per task, each worker mapping
    the file itself.  Results are identical either way.  ``meanwhile``: see
    :func:`audit.parallel.fork_map`.
    """
    if sum(view.nbytes for view in views) < (PROCESS_BYTES if min_bytes is None else min_bytes):
        return fork_map(TensorView.moments, views, 1, meanwhile=meanwhile)
    return fork_map(TensorView.moments, views, workers, meanwhile=meanwhile)
