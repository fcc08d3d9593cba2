"""Re-scoring stored traffic under one or more prompt banks, vectorised over all items.

An item's score per category is the maximum over its image row and all its text windows (as
`scoring.max_over` does for one item); over stored traffic that is a segment maximum
(`np.maximum.reduceat`) on the window scores, never a Python loop per item.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clipmod.policy import parallel, scoring
from clipmod.policy.prompts import Workspace
from clipmod.policy.schema import Policy
from clipmod.policy.scoring import TextEncoder
from clipmod.policy.traffic import StoredEmbeddings

F16 = npt.NDArray[np.float16]
F32 = npt.NDArray[np.float32]

_BLOCK = 8_192  # rows widened to float32 at a time (16 MiB at d=512)


def _row_scores(rows: F16, banks: Sequence[scoring.PromptBank]) -> list[F32]:
    """Score float16 rows under several banks, widening to float32 a block at a time.

    One reusable block per core instead of a float32 copy of everything: each row is widened
    once for all banks, and memory stays flat (first touches of fresh pages are costly in VMs).
    Banks that score alike (a draft that only moves thresholds) are scored once. Rows are split
    across cores (`parallel`).
    """
    distinct: dict[tuple[object, ...], int] = {}
    for bank in banks:
        distinct.setdefault(bank.signature, len(distinct))
    unique = [next(b for b in banks if b.signature == sig) for sig in distinct]
    outs = [np.empty((len(rows), len(b.spans)), dtype=np.float32) for b in unique]

    def job(lo: int, hi: int) -> None:
        block = np.empty((min(hi - lo, _BLOCK), rows.shape[1]), dtype=np.float32)
        work = Workspace()
        for start in range(lo, hi, _BLOCK):
            part = block[: min(_BLOCK, hi - start)]
            np.copyto(part, rows[start : start + len(part)])
            for out, bank in zip(outs, unique, strict=True):
                out[start : start + len(part)] = scoring.score(bank, part, tops=False, work=work)[0]

    parallel.over_rows(len(rows), _BLOCK, job)
    return [outs[distinct[b.signature]] for b in banks]


def score_items(emb: StoredEmbeddings, *banks: scoring.PromptBank) -> list[F32]:
    """Per bank, (n, C) scores: per category the max over each item's image row and text
    windows (as `scoring.max_over`), the text part a segment max over the window rows."""
    outs = [np.full((len(emb), len(b.spans)), -np.inf, dtype=np.float32) for b in banks]
    for out, image in zip(outs, _row_scores(emb.image, banks), strict=True):
        out[emb.image_items] = image
    if len(emb.text_items):
        for out, windows in zip(outs, _row_scores(emb.text, banks), strict=True):
            per_item = np.maximum.reduceat(windows, emb.text_starts, axis=0)
            out[emb.text_items] = np.maximum(out[emb.text_items], per_item)
    return outs


def item_scores(bank: scoring.PromptBank, emb: StoredEmbeddings) -> F32:
    """(n, C) scores of every stored item under one bank."""
    return score_items(emb, bank)[0]


class BankCache:
    """Prompt banks keyed by (model revision, policy text): a long-lived API process embeds the
    active version's prompts once, not on every backtest."""

    def __init__(self, limit: int = 16):
        self.limit = limit
        self._banks: dict[tuple[str, str], scoring.PromptBank] = {}
        self._lock = threading.Lock()  # API threads share one cache (and one model)

    def get(self, policy: Policy, encoder: TextEncoder) -> scoring.PromptBank:
        key = (encoder.revision, policy.model_dump_json())
        with self._lock:
            if key not in self._banks:
                if len(self._banks) >= self.limit:
                    self._banks.pop(next(iter(self._banks)))
                self._banks[key] = scoring.build_bank(
                    policy, lambda texts: encoder.encode_texts(texts), encoder.logit_scale
                )
            return self._banks[key]
