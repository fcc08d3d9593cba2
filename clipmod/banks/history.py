"""Bank matches over stored traffic: the worker's per-batch matching, for every stored item.

Several policies (a draft and the versions in force) often reference the same bank versions, so
every distinct snapshot is matched once, in one stacked product over the image rows, and each
policy's `BankScores` is assembled from the columns it references.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from clipmod.policy.banks import BankScores, BankSet, BankSnapshot, stack
from clipmod.policy.traffic import StoredEmbeddings


def match_history(emb: StoredEmbeddings, sets: Sequence[BankSet]) -> list[BankScores]:
    """Per bank set, every item's best cosine and entry (-inf/-1 for items without an image)."""
    distinct: dict[tuple[str, int, str], BankSnapshot] = {}
    for bank_set in sets:
        for snap in bank_set.banks:
            distinct.setdefault(_key(snap), snap)
    column = {key: b for b, key in enumerate(distinct)}
    union = stack([(snap, 0.0) for snap in distinct.values()])
    rows = union.match(emb.image)
    n = len(emb)
    sim = np.full((n, len(distinct)), -np.inf, dtype=np.float32)
    entry = np.full((n, len(distinct)), -1, dtype=np.int64)
    sim[emb.image_items], entry[emb.image_items] = rows.similarity, rows.entry
    out = []
    for bank_set in sets:
        cols = [column[_key(snap)] for snap in bank_set.banks]
        out.append(BankScores(sim[:, cols], entry[:, cols]))
    return out


def _key(snap: BankSnapshot) -> tuple[str, int, str]:
    """Entries never change, so a snapshot is its bank and entry ids (a hypothetical version,
    in a bank-change backtest, carries the number of the version it would become)."""
    digest = hashlib.blake2b(np.ascontiguousarray(snap.entry_ids).tobytes(), digest_size=16)
    return (snap.name, snap.version, digest.hexdigest())
