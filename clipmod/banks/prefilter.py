"""An int8 prefilter for a worker's bank matching on the CPU: a quarter of the bytes, same answers.

Why: a 100,000 x 128 float32 bank is 51 MB. It does not fit the 32 MiB L3 that decoding and the
forward pass have just filled, so every batch streamed it from memory, and matching added
14-20% to a bundled-model batch (README, Benchmarks). Here the entries are also kept as int8
codes (12.8 MB), the batch is matched against the codes with one exact integer product
(`torch._int_mm`, on the model's own threads), and only the few entries that could still be a
row's best are re-checked in float32. The best entry and its cosine are those of the plain
float32 product, for EVERY bank (a match, a miss and a backtest see the same numbers); only the
work differs.

The bound that makes it exact. Entries are coded per dimension: c_k = max_j |e_jk| / 127 and
q_jk = round(e_jk / c_k), leaving r_j = e_j - c * q_j. A row x is folded with the same scales,
x'_k = x_k c_k, and coded per row: s = max_k |x'_k| / 63, p = round(x' / s), leaving
rho = x' - s p. Then, in real arithmetic,

    x . e_j = s (p . q_j) + rho . q_j + x . r_j,   so   |x . e_j - s P_j| <= eps_q,
    eps_q = |rho| max_j |q_j| + |x| max_j |r_j|        (Cauchy-Schwarz, maxima per bank)

where P_j = p . q_j is an exact int32 sum (|p| <= 63, |q| <= 127: no overflow below
d = 268,000). The float32 product the worker used to compute differs from the real x . e_j by
at most gamma_d |x| |e_j|, gamma_d = d u / (1 - d u) with u = 2^-24 (whatever the summation
order, FMA or not). So each entry's approximate cosine s P_j is within
eps = eps_q + gamma_d |x| max_j |e_j| (+ 1e-9 for the float64 the bound is computed in) of its
float32 cosine. If j* is the float32 best and m the approximate best,
s P_j* >= cos_j* - eps >= cos_m - eps >= s P_m - 2 eps: every entry that can be the best, or tie
with it, has P_j >= P_m - 2 eps / s. Those candidates are re-checked in float32 (a dot product
per candidate: the product's value to within float32 rounding) and the best of them (ties to
the lowest index, like `argmax`) is the answer. `tests/unit/test_bank_prefilter.py`
checks the bound entry by entry and the answers against the plain product on adversarial
near-ties and near-threshold entries.

Why the rows are 7-bit: without VNNI, oneDNN's int8 product adds 128 to its first operand and
multiplies pairs into int16 with the second (`vpmaddubsw`), which saturates unless
2 * 255 * |second| <= 32767 (seen with `ONEDNN_MAX_CPU_ISA=AVX2`: 127 x 127 pairs came out
wrong, 127 x 64 did not). The entries are the first operand (8-bit codes; the product is also
~1.5x faster entries-first), the rows the second, coded within +-63. `_exact_kernel` checks the
extremes once per process and the prefilter is not used where they come out wrong.

When the candidates would cost more than the plain product (a row with no content, a bank of
many near-identical entries), `best` returns None and the caller does the plain product.
"""

from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

ENTRY_CODE = 127
ROW_CODE = 63  # 7 bits: see the module doc (no int16 saturation without VNNI)
BLOCK = 64  # entries per block: a row's candidates are found from its block maxima
# Below this many stacked entries the float32 product is as cheap (~0.4 ms for 32 rows against
# 8,000 entries on one core of the development machine) and the matrix stays in cache.
WORTH_FROM = 8192
_SLACK = 1e-9  # rounding of the float64 bound computations themselves (~1e-13 at d = 4096)
_UNIT = 2.0**-24  # float32 unit roundoff
_CHUNK = 16_384  # entries coded at a time, so coding 100,000 entries needs ~16 MB, not 100


@dataclass(frozen=True)
class Prefilter:
    """A stacked bank matrix as int8 codes, with each bank's error terms.

    Each bank's codes are padded to whole blocks with copies of its last entry, so a block
    holds one bank and its maximum never exceeds the bank's real best; padding rows have
    source -1 and are never candidates.
    """

    codes: Any  # torch.int8 (blocks * BLOCK, d): the codes q_j, bank by bank
    source: I64  # (blocks * BLOCK,) each code row's row in the stacked matrix, -1 for padding
    block_bank: I64  # (blocks,) the bank each block belongs to
    first_block: I64  # (non-empty banks,) where each non-empty bank's blocks begin
    filled: I64  # (non-empty banks,) those banks' indices
    column_scale: F64  # (d,) c
    code_norm: F64  # (B,) max_j |q_j| over each bank's entries
    residual: F64  # (B,) max_j |r_j|
    entry_norm: F64  # (B,) max_j |e_j|


def build(matrix: F32, starts: I64) -> Prefilter | None:
    """Codes for `matrix` (banks' rows from `starts[b]` to `starts[b + 1]`), or None where the
    int8 product is not exact on this machine or the entries are not finite numbers."""
    if not len(matrix) or not _exact_kernel(matrix.shape[1]) or not np.isfinite(matrix).all():
        return None
    import torch

    n = len(matrix)
    scale = np.abs(matrix).max(axis=0).astype(np.float64) / ENTRY_CODE
    scale[scale == 0] = 1.0
    flat = np.empty(matrix.shape, dtype=np.int8)
    code_norm, residual = np.empty(n), np.empty(n)
    for lo in range(0, n, _CHUNK):
        part = matrix[lo : lo + _CHUNK].astype(np.float64)
        q = np.clip(np.rint(part / scale), -ENTRY_CODE, ENTRY_CODE)
        flat[lo : lo + len(part)] = q
        code_norm[lo : lo + len(part)] = np.linalg.norm(q, axis=1)
        residual[lo : lo + len(part)] = np.linalg.norm(part - q * scale, axis=1)
    entry_norm = np.linalg.norm(matrix.astype(np.float64), axis=1)
    spans = [(int(a), int(b)) for a, b in itertools.pairwise(starts)]
    filled = [b for b, (lo, hi) in enumerate(spans) if hi > lo]
    sources: list[I64] = []
    banks: list[I64] = []
    first: list[int] = []
    blocks = 0
    for b in filled:
        lo, hi = spans[b]
        pad = -(hi - lo) % BLOCK
        first.append(blocks)
        blocks += (hi - lo + pad) // BLOCK
        sources.append(np.concatenate([np.arange(lo, hi), np.full(pad, -1)]).astype(np.int64))
        banks.append(np.full((hi - lo + pad) // BLOCK, b, dtype=np.int64))
    source = np.concatenate(sources)

    def each(values: F64) -> F64:
        return np.array([values[lo:hi].max() if hi > lo else 0.0 for lo, hi in spans])

    return Prefilter(
        codes=torch.from_numpy(np.ascontiguousarray(flat[_padded_rows(source)])),
        source=source,
        block_bank=np.concatenate(banks),
        first_block=np.array(first, dtype=np.int64),
        filled=np.array(filled, dtype=np.int64),
        column_scale=scale,
        code_norm=each(code_norm),
        residual=each(residual),
        entry_norm=each(entry_norm),
    )


def _padded_rows(source: I64) -> I64:
    """Which matrix row each code row copies: its own, or for padding the last real row before
    it (each bank's padding follows its last entry)."""
    real = np.where(source >= 0, np.arange(len(source)), 0)
    return source[np.maximum.accumulate(real)]


def approximate(pf: Prefilter, rows: F32) -> tuple[Any, F64, F64]:
    """The code sums P (torch.int32 (code rows, n)), each row's scale s and its bound eps per
    bank (n, B): every real entry's float32 cosine lies within eps of s * P."""
    import torch

    dim = rows.shape[1]
    x = rows.astype(np.float64)
    folded = x * pf.column_scale
    row_scale = np.abs(folded).max(axis=1) / ROW_CODE
    row_scale[row_scale == 0] = 1.0
    p = np.clip(np.rint(folded / row_scale[:, None]), -ROW_CODE, ROW_CODE)
    rho = np.linalg.norm(folded - p * row_scale[:, None], axis=1)
    norm = np.linalg.norm(x, axis=1)
    gamma = dim * _UNIT / (1 - dim * _UNIT)
    eps = (
        rho[:, None] * pf.code_norm[None, :]
        + norm[:, None] * (pf.residual + gamma * pf.entry_norm)[None, :]
        + _SLACK
    )
    product = torch._int_mm(pf.codes, torch.from_numpy(p.astype(np.int8)).T)  # exact int32
    return product, row_scale, eps


def best(pf: Prefilter, matrix: F32, starts: I64, rows: F32) -> tuple[F32, I64] | None:
    """Per row and bank, the float32 best cosine and its entry (-inf / -1 for an empty bank),
    as `rows @ matrix.T` followed by a per-bank argmax gives them; None when the plain product
    is cheaper (see the module doc)."""
    if not np.isfinite(rows).all():
        return None
    n, n_banks = len(rows), len(starts) - 1
    product, row_scale, eps = approximate(pf, rows)
    blocks = product.numpy().reshape(-1, BLOCK, n)
    block_max = product.view(-1, BLOCK, n).amax(dim=1).numpy().T  # (n, blocks)
    # Per row and bank, the lowest code sum an entry can have and still be the best: within
    # 2 eps of the bank's best code sum, and one lower for the float64 rounding.
    cut = np.full((n, n_banks), np.inf)
    top = np.maximum.reduceat(block_max, pf.first_block, axis=1)
    cut[:, pf.filled] = top - 2 * eps[:, pf.filled] / row_scale[:, None] - 1
    r_block, k_block = np.nonzero(block_max >= cut[:, pf.block_bank])
    if len(r_block) > block_max.size // 2:  # most blocks hold a candidate: no narrowing
        return None
    values = blocks[k_block, :, r_block]  # (selected, BLOCK)
    bank_of = pf.block_bank[k_block]
    at, pos = np.nonzero(values >= cut[r_block, bank_of][:, None])
    c = pf.source[k_block[at] * BLOCK + pos]
    real = c >= 0  # padding repeats an entry that is a candidate itself
    r, c, bank = r_block[at][real], c[real], bank_of[at][real]
    if len(c) > max(4096, len(matrix) // 2):  # re-checking would read what the plain product does
        return None
    exact = np.einsum("ij,ij->i", rows[r], matrix[c])
    # np.nonzero walks rows, then blocks (banks in order), then entries: candidates come sorted
    # by (row, bank, entry), so each group's best is its maximum, ties to its first entry.
    group = r * n_banks + bank
    edges = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    best_of = np.repeat(np.maximum.reduceat(exact, edges), np.diff(np.r_[edges, len(exact)]))
    first = np.minimum.reduceat(
        np.where(exact == best_of, np.arange(len(exact)), len(exact)), edges
    )
    sim = np.full((n, n_banks), -np.inf, dtype=np.float32)
    entry = np.full((n, n_banks), -1, dtype=np.int64)
    sim[r[first], bank[first]] = exact[first]
    entry[r[first], bank[first]] = c[first] - starts[bank[first]]
    return sim, entry


@functools.cache
def _exact_kernel(dim: int) -> bool:
    """Whether `torch._int_mm` sums the extreme codes exactly here (once per process and size)."""
    try:
        import torch

        def extremes(code: int, rows: int) -> npt.NDArray[np.int8]:
            fixed = [np.resize(signs, dim) for signs in ([1], [-1], [1, -1], [1, 1, -1, -1])]
            out = np.concatenate([np.stack(fixed), rng.choice([1, -1], (rows, dim))])
            return (out * code).astype(np.int8)

        rng = np.random.default_rng(0)
        entries = np.resize(extremes(ENTRY_CODE, 60), (4096, dim))
        ok = True
        for n in (1, 7, 32):  # the shapes of a worker's batches (kernels differ by shape)
            rows = extremes(ROW_CODE, n)[:n]
            got = torch._int_mm(torch.from_numpy(entries), torch.from_numpy(rows).T).numpy()
            ok &= bool(np.array_equal(got, entries.astype(np.int64) @ rows.T.astype(np.int64)))
    except (ImportError, AttributeError, RuntimeError) as exc:  # no torch, or no int8 mm
        log.warning("bank prefilter off: %s", exc)
        return False
    if not ok:
        log.warning("bank prefilter off: the int8 product is not exact on this machine")
    return ok
