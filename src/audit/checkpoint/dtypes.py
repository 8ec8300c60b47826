"""safetensors dtype names mapped to numpy dtypes.

numpy has no bfloat16 or float8 types; ``ml_dtypes`` provides them with exact
conversions to float64.  Statistics must never accumulate in these narrow
types (numpy's sum of a bf16 array is wrong by orders of magnitude), so
callers always widen to float64 first (see :mod:`audit.checkpoint.tensor`).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a safetensors dtype name; KeyError when unknown."""
    return DTYPES[name]


def is_float(name: str) -> bool:
    return name in FLOAT_DTYPES
