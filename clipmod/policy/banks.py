"""Near-duplicate matching against embedding banks: the maths the worker and backtests share.

Prompts describe what a category looks like; a bank holds exact things a platform already knows
(images its moderators removed, a scam template, its own logo). Re-uploads change pixels (crops,
re-encodes, recolouring) but barely move a CLIP embedding, so the best cosine against a bank
catches what an exact hash misses.

A policy's banks are stacked into ONE (entries, d) matrix, so a batch costs one matrix product
whatever the number of banks; each bank is a column range of the result, and per bank we keep
the best cosine and which entry gave it. Only image rows are matched: bank entries are image
embeddings, and a text window's cosine to an image lives on another scale.

The rule (applied inside `scoring.judge`, so worker and backtest cannot disagree): a match is a
cosine at or above the bank's threshold; a `block` or `review` match raises the item's action to
at least that; an `allow` match suppresses every prompt-based flag (category severities become
`allow`) but never a `block`/`review` bank match. The verdict names the deciding match: the most
severe kind, then the closest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from clipmod.actions import Action
from clipmod.banks import prefilter as int8
from clipmod.policy import parallel

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
Bools = npt.NDArray[np.bool_]

# Rows per block when matching history: keeps the (rows, entries) similarity block near 64 MiB.
_BLOCK_CELLS = 16 * 1024 * 1024


@dataclass(frozen=True)
class BankSnapshot:
    """One version of one bank, as a matrix: entry k is row k of `embeddings`."""

    name: str
    version: int
    kind: Action
    model_revision: str
    entry_ids: I64  # (N,) the entries' database ids, for the verdict
    embeddings: F32  # (N, d), L2-normalised

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def __len__(self) -> int:
        return len(self.entry_ids)


@dataclass(frozen=True)
class BankScores:
    """Per item and bank: the best cosine (-inf without an image) and its entry (-1 then)."""

    similarity: F32  # (n, B)
    entry: I64  # (n, B) row within the bank's snapshot


@dataclass(frozen=True)
class BankSet:
    """The banks one policy references, stacked for one matrix product per batch."""

    banks: tuple[BankSnapshot, ...]
    thresholds: F64  # (B,) float64: verdicts report exactly what the editor wrote
    matrix: F32  # (sum N, d)
    starts: I64  # (B + 1,) where each bank's rows begin in `matrix`
    device_matrix: Any = field(default=None, compare=False)  # a torch tensor on the GPU, or None
    prefilter: int8.Prefilter | None = field(default=None, compare=False)  # CPU batches, or None

    @property
    def kinds(self) -> I8:
        return np.array([b.kind.severity for b in self.banks], dtype=np.int8)

    def match(self, rows: npt.NDArray[np.floating]) -> BankScores:
        """Best cosine and entry per bank for each row.

        A worker's batch (a few rows) is one product, on the device when there is one. On the
        CPU a set stacked with a prefilter matches the batch against int8 codes and re-checks
        the few entries that could be the best in float32 (`clipmod.banks.prefilter`): the
        same best entries and cosines as the float32 product, at a quarter of the bytes read.
        History (many rows) goes a block at a time with the rows split across cores
        (`parallel`).
        """
        x = np.asarray(rows)
        n, n_banks = len(x), len(self.banks)
        sim = np.full((n, n_banks), -np.inf, dtype=np.float32)
        entry = np.full((n, n_banks), -1, dtype=np.int64)
        if n == 0 or len(self.matrix) == 0:
            return BankScores(sim, entry)
        step = max(1, _BLOCK_CELLS // len(self.matrix))
        if n <= step:
            block = np.asarray(x, dtype=np.float32)
            if self.device_matrix is not None:
                return BankScores(*_best_on_device(self, block))
            if self.prefilter is not None:
                found = int8.best(self.prefilter, self.matrix, self.starts, block)
                if found is not None:
                    return BankScores(*found)
            return BankScores(*_best(self, block @ self.matrix.T, 0))

        def job(lo: int, hi: int) -> None:
            for start in range(lo, hi, step):
                block = np.asarray(x[start : min(start + step, hi)], dtype=np.float32)
                s, e = _best(self, block @ self.matrix.T, 0)
                sim[start : start + len(block)], entry[start : start + len(block)] = s, e

        parallel.over_rows(n, step, job)
        return BankScores(sim, entry)


def _best(bank_set: BankSet, sims: F32, offset: int) -> tuple[F32, I64]:
    """Per bank, the best of `sims`, whose columns are the set's entries from `offset` on
    (entries outside `sims` are left at -inf / -1)."""
    n, width = sims.shape
    out_s = np.full((n, len(bank_set.banks)), -np.inf, dtype=np.float32)
    out_e = np.full((n, len(bank_set.banks)), -1, dtype=np.int64)
    for b in range(len(bank_set.banks)):
        lo = max(int(bank_set.starts[b]), offset)
        hi = min(int(bank_set.starts[b + 1]), offset + width)
        if hi > lo:
            part = sims[:, lo - offset : hi - offset]
            best = part.argmax(axis=1)
            out_s[:, b] = part[np.arange(n), best]
            out_e[:, b] = best + (lo - int(bank_set.starts[b]))
    return out_s, out_e


def _best_on_device(bank_set: BankSet, block: F32) -> tuple[F32, I64]:
    """`_best` with the product and the per-bank maximum on the runtime's device: only
    (rows, banks) numbers come back to the host."""
    import torch

    matrix = bank_set.device_matrix
    rows = torch.from_numpy(np.ascontiguousarray(block)).to(matrix.device, matrix.dtype)
    sims = rows @ matrix.T
    n = len(block)
    out_s = np.full((n, len(bank_set.banks)), -np.inf, dtype=np.float32)
    out_e = np.full((n, len(bank_set.banks)), -1, dtype=np.int64)
    for b in range(len(bank_set.banks)):
        lo, hi = int(bank_set.starts[b]), int(bank_set.starts[b + 1])
        if hi > lo:
            values, index = sims[:, lo:hi].max(dim=1)
            out_s[:, b] = values.float().cpu().numpy()
            out_e[:, b] = index.cpu().numpy()
    return out_s, out_e


def stack(
    pairs: Sequence[tuple[BankSnapshot, float]],
    device: Any = None,
    *,
    prefilter_at: int | None = None,
) -> BankSet:
    """Stack snapshots (with the policy's threshold for each) into one matrix.

    With a CUDA `device` the matrix is also copied there once, so each batch's product runs
    where the image embeddings were computed. Otherwise, from `prefilter_at` stacked entries
    on, the int8 prefilter is built once here for the worker's batches (a backtest, matching
    many rows at once, passes None and skips the ~0.1 s it costs per 100,000 entries).
    """
    banks = tuple(snap for snap, _ in pairs)
    dims = {snap.embeddings.shape[1] for snap in banks if len(snap)}
    if len(dims) > 1:
        raise ValueError(f"banks of different embedding sizes {sorted(dims)} in one policy")
    dim = dims.pop() if dims else 1
    parts = [snap.embeddings.reshape(-1, dim) for snap in banks]
    matrix = np.ascontiguousarray(
        np.concatenate(parts, axis=0) if parts else np.zeros((0, dim)), dtype=np.float32
    )
    starts = np.concatenate([[0], np.cumsum([len(s) for s in banks])]).astype(np.int64)
    device_matrix = None
    if device is not None and getattr(device, "type", str(device)) == "cuda" and len(matrix):
        import torch

        device_matrix = torch.from_numpy(matrix).to(device)
    codes = None
    if device_matrix is None and prefilter_at is not None and len(matrix) >= prefilter_at:
        codes = int8.build(matrix, starts)
    thresholds = np.array([t for _, t in pairs], dtype=np.float64)
    return BankSet(banks, thresholds, matrix, starts, device_matrix, codes)


@dataclass(frozen=True)
class BankDecision:
    """What banks did to n items (see the module doc for the rule)."""

    suppressed: Bools  # (n,) an allow bank matched: prompt-based flags were dropped
    severity: I8  # (n,) the action the deciding match stands for (0 where none or allow)
    bank: I64  # (n,) the deciding bank's index in the set, -1 where none matched


def decide(bank_set: BankSet, scores: BankScores) -> BankDecision:
    hit = scores.similarity >= bank_set.thresholds[None, :]
    kinds = bank_set.kinds
    n = len(hit)
    if not len(kinds):
        none = np.zeros(n, dtype=bool)
        return BankDecision(none, np.zeros(n, dtype=np.int8), np.full(n, -1, dtype=np.int64))
    suppressed: Bools = np.asarray(hit[:, kinds == Action.ALLOW.severity].any(axis=1))
    # Most severe kind first, then the closest: cosines lie in [-1, 1], so kind * 4 dominates.
    key = np.where(hit, kinds[None, :] * 4.0 + scores.similarity, -np.inf)
    deciding = key.argmax(axis=1)
    matched = hit.any(axis=1)
    bank = np.where(matched, deciding, -1).astype(np.int64)
    severity = np.where(matched, kinds[deciding], 0).astype(np.int8)
    return BankDecision(suppressed, severity, bank)


@dataclass(frozen=True)
class BankMatch:
    """The match that decided a verdict, as the verdict records it."""

    bank: str
    version: int
    kind: Action
    entry: int
    similarity: float
    threshold: float

    @property
    def label(self) -> str:
        return f"{self.bank}@{self.version}"

    def to_dict(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "version": self.version,
            "label": self.label,
            "kind": self.kind.value,
            "entry": self.entry,
            "similarity": round(self.similarity, 6),
            "threshold": self.threshold,
        }


def match_of(bank_set: BankSet, scores: BankScores, b: int, i: int) -> BankMatch:
    """Item i's match against bank b (the deciding one: `Judgement.bank[i]`)."""
    snap = bank_set.banks[b]
    row = int(scores.entry[i, b])
    return BankMatch(
        bank=snap.name,
        version=snap.version,
        kind=snap.kind,
        entry=int(snap.entry_ids[row]),
        similarity=float(scores.similarity[i, b]),
        threshold=float(bank_set.thresholds[b]),
    )
