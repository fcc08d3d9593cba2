"""Semantic search over stored traffic: the items whose images (and texts) lie closest to a query.

CLIP puts a text and the images it describes near each other, so one brute-force scan of the
traffic store's rows answers both "images like this text" and "images like this item". A scan
of a million float16 rows of d = 128 is one matrix-vector product a block at a time (about a
tenth of a second on two cores), exact, with no index to build or keep in step; past one
machine's memory an approximate index (pgvector's HNSW, a vector database) takes over (see
README "The traffic store"). `GET /v1/search` and the dashboard's search both come here, so a
deleted item (left out by the store's reader) disappears from both at once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from clipmod import embeddings
from clipmod.errors import InvalidInput
from clipmod.models import ItemEmbedding
from clipmod.policy.traffic import StoredEmbeddings

_BLOCK = 65_536
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Hit:
    item_id: str
    tenant_id: int
    similarity: float
    source: str = "image"  # what matched best: "image" or "text"


def search(
    emb: StoredEmbeddings,
    query: npt.NDArray[np.floating],
    *,
    limit: int = 20,
    tenants: Collection[int] | None = None,
    exclude: str | None = None,
    text: bool = False,
) -> list[Hit]:
    """The `limit` items with the highest cosine to `query` (L2-normalised), best first.

    An item scores its image row, and with `text` the best of its text windows too. `tenants`:
    only their items (None: every tenant). `exclude`: an item left out (the query's own)."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    best = np.full(len(emb), -np.inf, dtype=np.float32)
    source = np.zeros(len(emb), dtype=np.int8)  # 0 image, 1 text
    if len(emb.image):
        best[emb.image_items] = _scan(emb.image, q)
    if text and len(emb.text_items):
        per_item = np.maximum.reduceat(_scan(emb.text, q), emb.text_starts)
        better = per_item > best[emb.text_items]
        best[emb.text_items] = np.maximum(best[emb.text_items], per_item)
        source[emb.text_items[better]] = 1
    if tenants is not None:
        best[~np.isin(emb.tenant_ids, np.fromiter(tenants, dtype=np.int64))] = -np.inf
    if exclude is not None and len(exclude) <= 32 and exclude.isascii():
        best[emb.ids.raw == exclude.encode("ascii")] = -np.inf
    k = min(limit, int(np.isfinite(best).sum()))
    if k <= 0:
        return []
    top = np.argpartition(-best, k - 1)[:k]
    top = top[np.argsort(-best[top], kind="stable")]
    return [
        Hit(
            emb.ids[i],
            int(emb.tenant_ids[i]),
            float(best[i]),
            "text" if source[i] else "image",
        )
        for i in top.tolist()
    ]


def _scan(rows: npt.NDArray[np.float16], q: F32) -> F32:
    """Cosine of every row with `q`, widened to float32 a block at a time."""
    if rows.shape[1] != len(q):
        raise InvalidInput(
            f"stored embeddings have {rows.shape[1]} dimensions and the query {len(q)}: they "
            "come from another model",
            code="dim_mismatch",
        )
    sims = np.empty(len(rows), dtype=np.float32)
    block = np.empty((min(_BLOCK, len(rows)), rows.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), _BLOCK):
        part = block[: min(_BLOCK, len(rows) - start)]
        np.copyto(part, rows[start : start + len(part)])
        sims[start : start + len(part)] = part @ q
    return sims


def stored_vector(session: Session, item_id: str, revision: str) -> F32 | None:
    """An item's own query vector from SQL: its image row, else the mean of its text windows;
    None when the item has no embedding for `revision` (not scored yet, or deleted)."""
    row = session.get(ItemEmbedding, (item_id, revision))
    if row is None or (row.image is None and not row.text):
        return None
    stored = row.image if row.image is not None else row.text
    assert stored is not None
    vector: F32 = embeddings.from_bytes(stored, row.dim).mean(axis=0).astype(np.float32)
    return vector
