"""Semantic search over stored traffic: the items whose images lie closest to a query vector.

CLIP puts a text and the images it describes near each other, so one brute-force scan of the
traffic store's image rows answers both "images like this text" and "images like this item".
A scan of a million float16 rows of d = 128 is one matrix-vector product a block at a time
(about a tenth of a second on two cores), exact, with no index to build or keep in step; past
one machine's memory an approximate index (pgvector's HNSW, a vector database) takes over
(see README "The traffic store").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clipmod.policy.traffic import StoredEmbeddings

_BLOCK = 65_536


@dataclass(frozen=True)
class Hit:
    item_id: str
    tenant_id: int
    similarity: float


def search(
    emb: StoredEmbeddings,
    query: npt.NDArray[np.floating],
    *,
    limit: int = 20,
    tenant_id: int | None = None,
    exclude: str | None = None,
) -> list[Hit]:
    """The `limit` items with the highest cosine to `query` (L2-normalised), best first."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    rows, owners = emb.image, emb.image_items
    if not len(rows) or len(q) != rows.shape[1]:
        return []
    sims = np.empty(len(rows), dtype=np.float32)
    block = np.empty((min(_BLOCK, len(rows)), rows.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _BLOCK):
        part = block[: min(_BLOCK, len(rows) - start)]
        np.copyto(part, rows[start : start + len(part)])
        sims[start : start + len(part)] = part @ q
    if tenant_id is not None:
        sims[emb.tenant_ids[owners] != tenant_id] = -np.inf
    if exclude is not None:
        where = emb.ids.positions([exclude])[0]
        if where >= 0:
            sims[owners == where] = -np.inf
    k = min(limit, int(np.isfinite(sims).sum()))
    if k <= 0:
        return []
    best = np.argpartition(-sims, k - 1)[:k]
    best = best[np.argsort(-sims[best], kind="stable")]
    return [
        Hit(emb.ids[int(owners[r])], int(emb.tenant_ids[owners[r]]), float(sims[r]))
        for r in best.tolist()
    ]
