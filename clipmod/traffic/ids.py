"""Item ids of the traffic store as one fixed-width byte array, looked up without a Python dict.

A million ids as Python strings cost ~100 MB and a third of a second to build, on every
backtest; as `S32` bytes they are 32 MB, mapped straight from disk. Looking ids up (moderator
decisions, `like=<item>`) hashes each 32-byte id to a uint64 with vectorised arithmetic and
binary-searches a sorted copy, checking the bytes of every candidate, so a hash collision can
cost time but never a wrong answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
WIDTH = 32  # `items.id` is String(32)
_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93],
    dtype=np.uint64,
)


def as_bytes(ids: Sequence[str]) -> npt.NDArray[np.bytes_]:
    try:
        out = np.array([i.encode("ascii") for i in ids], dtype=f"S{WIDTH}")
    except UnicodeEncodeError:
        raise ValueError("item ids must be ASCII") from None
    if any(len(i) > WIDTH for i in ids):
        raise ValueError(f"item ids are at most {WIDTH} characters")
    return out


def _hash(raw: npt.NDArray[np.bytes_]) -> npt.NDArray[np.uint64]:
    w = np.ascontiguousarray(raw, dtype=f"S{WIDTH}").view("<u8").reshape(-1, 4)
    with np.errstate(over="ignore"):
        out: npt.NDArray[np.uint64] = (
            (w[:, 0] * _MIX[0]) ^ (w[:, 1] * _MIX[1]) ^ (w[:, 2] * _MIX[2]) ^ (w[:, 3] * _MIX[3])
        )
    return out


class ItemIds(Sequence[str]):
    """A read-only sequence of item ids over an `S32` array (possibly memory-mapped)."""

    def __init__(self, raw: npt.NDArray[np.bytes_]):
        self.raw = raw
        self._order: I64 | None = None
        self._sorted: npt.NDArray[np.uint64] | None = None

    @classmethod
    def of(cls, ids: Sequence[str]) -> ItemIds:
        return ids if isinstance(ids, ItemIds) else cls(as_bytes(ids))

    def __len__(self) -> int:
        return len(self.raw)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [bytes(b).decode("ascii") for b in self.raw[index]]
        return bytes(self.raw[index]).decode("ascii")

    def __iter__(self) -> Iterator[str]:
        for b in self.raw:
            yield bytes(b).decode("ascii")

    def tolist(self) -> list[str]:
        return [bytes(b).decode("ascii") for b in self.raw]

    def positions(self, ids: Sequence[str]) -> I64:
        """Index of each id here, -1 where absent (ids in the store are unique)."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not len(ids) or not len(self.raw):
            return out
        if self._order is None:
            hashes = _hash(self.raw)
            self._order = np.argsort(hashes).astype(np.int64)
            self._sorted = hashes[self._order]
        assert self._sorted is not None
        wanted = as_bytes(ids)
        query = _hash(wanted)
        lo = np.searchsorted(self._sorted, query, side="left")
        hi = np.searchsorted(self._sorted, query, side="right")
        found = hi > lo
        first = self._order[np.minimum(lo, len(self._order) - 1)]
        direct = found & (self.raw[first] == wanted)
        out[direct] = first[direct]
        # A hash shared by several ids (a collision, or a repeated id): compare each candidate.
        for k in np.flatnonzero(found & ~direct & (hi - lo > 1)).tolist():
            for candidate in self._order[lo[k] : hi[k]].tolist():
                if self.raw[candidate] == wanted[k]:
                    out[k] = candidate
                    break
        return out


def occurrences(raw: npt.NDArray[np.bytes_], ids: Sequence[str]) -> I64:
    """Every index of `raw` that holds one of `ids`, repeats included (a tombstoned row and
    the item's later row share an id). One vectorised hash pass, then the bytes of the few
    candidates compared, so a collision costs time, never a wrong row."""
    if not len(raw) or not len(ids):
        return np.zeros(0, dtype=np.int64)
    wanted = as_bytes(ids)
    candidates = np.flatnonzero(np.isin(_hash(raw), _hash(wanted)))
    return candidates[np.isin(raw[candidates], wanted)].astype(np.int64)
