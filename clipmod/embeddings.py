"""Portable embedding storage: little-endian float16 rows.

Half precision halves the bytes and changes a cosine by ~1e-3 at most, well under any threshold
granularity an editor would set; little-endian makes the bytes identical on every platform.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_DTYPE = np.dtype("<f2")


def to_bytes(matrix: npt.NDArray[np.floating]) -> bytes:
    return np.ascontiguousarray(matrix, dtype=_DTYPE).tobytes()


def from_bytes(data: bytes, dim: int) -> npt.NDArray[np.float32]:
    return np.frombuffer(data, dtype=_DTYPE).reshape(-1, dim).astype(np.float32)


def rows(data: bytes, dim: int) -> npt.NDArray[np.float16]:
    """Stored bytes as (rows, dim) float16, without a copy: for reading history in bulk."""
    return np.frombuffer(data, dtype=_DTYPE).reshape(-1, dim)
