"""Semantic search over stored embeddings: text → CLIP text embedding → nearest items.

The workers stored every item's L2-normalised image embedding and text-window embeddings
(float16, `ItemEmbedding`), so searching is a dot product against them: no image is decoded
and no image forward pass runs; only the query goes through the text encoder. An item's score
is its best match over its image and its text windows. "Find similar" uses an item's own image
embedding (its text, for text-only items) as the query.

Exact search with numpy reads the person's tenants' rows for the model revision in one query
and scores them in one matrix product (see README for timings). That is fine up to about a
million items on one machine; beyond it an approximate index (pgvector's HNSW, or FAISS kept
beside the workers) would take over this module's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod import embeddings
from clipmod.errors import InvalidInput, NotFound
from clipmod.models import Item, ItemEmbedding, User
from clipmod.review.access import tenant_clause, visible_item

F32 = npt.NDArray[np.float32]
MAX_QUERY_CHARS = 300
DEFAULT_LIMIT = 24


class QueryEncoder(Protocol):
    revision: str

    def encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.floating[Any]]: ...


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    source: str  # "image" or "text": what matched best


def check_query(query: str) -> str:
    text = " ".join(query.split())
    if not text:
        raise InvalidInput("type what to look for, e.g. “a photo of a knife”", code="empty_query")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"the search text is {len(query):,} characters; the limit is {MAX_QUERY_CHARS}",
            code="query_too_long",
        )
    return text


def _nearest(
    session: Session, user: User, revision: str, query: F32, limit: int, exclude: str | None
) -> list[Hit]:
    stmt = (
        select(ItemEmbedding.item_id, ItemEmbedding.dim, ItemEmbedding.image, ItemEmbedding.text)
        .join(Item, Item.id == ItemEmbedding.item_id)
        .where(ItemEmbedding.model_revision == revision, tenant_clause(user))
    )
    rows = [r for r in session.execute(stmt) if r[0] != exclude]
    if not rows:
        return []
    dim = int(rows[0][1])
    images = [r[2] for r in rows]
    texts = [r[3] or b"" for r in rows]
    q = query.reshape(-1).astype(np.float32)
    if q.shape[0] != dim:
        raise InvalidInput("stored embeddings do not match the loaded model", code="dim_mismatch")
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    source = np.zeros(len(rows), dtype=np.int8)  # 0 image, 1 text
    img_idx = [i for i, b in enumerate(images) if b is not None]
    if img_idx:
        mat = embeddings.from_bytes(b"".join(b for b in images if b is not None), dim)
        best[img_idx] = mat @ q
    txt_idx = [i for i, b in enumerate(texts) if b]
    if txt_idx:
        blobs = [texts[i] for i in txt_idx]
        windows = np.array([len(b) // (2 * dim) for b in blobs])
        scores = embeddings.from_bytes(b"".join(blobs), dim) @ q
        starts = np.concatenate([[0], np.cumsum(windows)[:-1]])
        per_item = np.maximum.reduceat(scores, starts)
        better = per_item > best[txt_idx]
        best[txt_idx] = np.maximum(best[txt_idx], per_item)
        source[np.asarray(txt_idx)[better]] = 1
    k = min(limit, len(rows))
    top = np.argpartition(-best, k - 1)[:k]
    top = top[np.argsort(-best[top], kind="stable")]
    return [
        Hit(rows[i][0], round(float(best[i]), 4), "text" if source[i] else "image") for i in top
    ]


def search_text(
    session: Session, user: User, encoder: QueryEncoder, query: str, *, limit: int = DEFAULT_LIMIT
) -> list[Hit]:
    """The person's tenants' items nearest to a text query, best first."""
    text = check_query(query)
    vector = np.asarray(encoder.encode_texts([text])[0], dtype=np.float32)
    return _nearest(session, user, encoder.revision, vector, limit, None)


def similar(
    session: Session, user: User, revision: str, item_id: str, *, limit: int = DEFAULT_LIMIT
) -> list[Hit]:
    """Items nearest to one item's own embedding (image, else its first text window)."""
    item = visible_item(session, user, item_id)
    row = session.get(ItemEmbedding, (item.id, revision))
    if row is None or (row.image is None and not row.text):
        raise NotFound(
            "this item has no stored embedding for the loaded model yet", code="no_embedding"
        )
    vector = embeddings.from_bytes(row.image or row.text or b"", row.dim)[0]
    return _nearest(session, user, revision, vector, limit, item.id)
