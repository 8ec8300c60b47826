"""safetensors dtype names mapped to numpy dtypes.

numpy has no bfloat16 or float8 types; ``ml_dtypes`` provides them with exact
conversions to float64.  Statistics must never accumulate in these narrow
types (numpy's sum of a bf16 array is wrong by orders of magnitude), so
callers always widen to float64 first (see :mod:`audit.checkpoint.tensor`).

``ml_dtypes`` costs seconds to import on a small machine, so it is imported
on the first narrow tensor actually decoded: checking a header needs only
:data:`ITEMSIZE`.
"""

from __future__ import annotations

import functools
from typing import Iterator, Mapping

import numpy as np

_NUMPY = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
}
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
NAMES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL")
ITEMSIZE: dict[str, int] = {**{name: np.dtype(code).itemsize for name, code in _NUMPY.items()},
                            "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


@functools.cache
def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a safetensors dtype name; KeyError when unknown."""
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
    return np.dtype(_NUMPY[name])


def stored_dtype(name: str, bits: bool = False) -> np.dtype:
    """The numpy dtype of a safetensors dtype name, or with ``bits`` the unsigned integer of its width.

    Reductions of bf16 weights work on the bits (a 16-bit shift widens them to
    float32 exactly), so they never import ``ml_dtypes``: about a second per
    process on a small machine, paid again by every worker that did not inherit it.
    """
    return np.dtype(f"<u{ITEMSIZE[name]}") if bits else numpy_dtype(name)


class _Table(Mapping[str, np.dtype]):
    """Name -> numpy dtype, each looked up (and ``ml_dtypes`` imported) only when asked for."""

    def __getitem__(self, name: str) -> np.dtype:
        return numpy_dtype(name)

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)

    def __contains__(self, name: object) -> bool:
        return name in ITEMSIZE


DTYPES: Mapping[str, np.dtype] = _Table()


def is_float(name: str) -> bool:
    return name in FLOAT_DTYPES
