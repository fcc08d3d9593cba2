"""Stored traffic as arrays: every item's embeddings for one model revision, decoded once.

Backtests, lint and suggestions re-score history without running the image model, so what they
need is the worker's stored L2-normalised embeddings as two big float16 matrices (image rows and
text-window rows) plus which item each row belongs to. One query reads them all; the rows stay
float16 until a scorer widens a block at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clipmod import embeddings
from clipmod.errors import ClipmodError
from clipmod.models import Decision, Item, ItemEmbedding, Tenant

F16 = npt.NDArray[np.float16]
I64 = npt.NDArray[np.int64]
Progress = Callable[[int], None]

_CHUNK = 20_000  # rows per fetch: progress granularity, not a memory bound


@dataclass(frozen=True)
class StoredEmbeddings:
    """Every stored embedding of one model revision, decoded once; item i is row i of `ids`."""

    ids: list[str]
    tenant_ids: I64  # (n,)
    tenant_names: dict[int, str]
    image: F16  # (n_img, d) image rows, as stored
    image_items: I64  # (n_img,) the item of each image row
    text: F16  # (W, d) text-window rows, each item's windows contiguous
    text_items: I64  # (n_txt,) items that have text
    text_starts: I64  # (n_txt,) where each of them starts in `text`
    model_revision: str

    def __len__(self) -> int:
        return len(self.ids)


def load_embeddings(
    session: Session,
    revision: str,
    *,
    since: datetime | None = None,
    labelled_only: bool = False,
    progress: Progress | None = None,
) -> StoredEmbeddings:
    """Read and decode stored embeddings in one pass (`labelled_only`: items with a Decision)."""
    stmt = (
        select(
            ItemEmbedding.item_id,
            Item.tenant_id,
            ItemEmbedding.dim,
            ItemEmbedding.image,
            ItemEmbedding.text,
            func.coalesce(func.length(ItemEmbedding.text), 0),
        )
        .join(Item, Item.id == ItemEmbedding.item_id)
        .where(ItemEmbedding.model_revision == revision)
    )
    if since is not None:
        stmt = stmt.where(Item.created_at >= as_utc(since))
    if labelled_only:
        stmt = stmt.where(ItemEmbedding.item_id.in_(select(Decision.item_id)))
    rows: list[Any] = []
    for part in session.connection().execute(stmt).partitions(_CHUNK):
        rows.extend(part)
        if progress is not None:
            progress(len(part))
    names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    if not rows:
        empty = np.zeros((0, 1), dtype=np.float16)
        none = np.zeros(0, dtype=np.int64)
        return StoredEmbeddings([], none, names, empty, none, empty, none, none, revision)
    ids, tenants, dims, images, texts, text_len = zip(*rows, strict=True)
    if len(set(dims)) != 1:
        raise ClipmodError(
            f"stored embeddings for revision {revision} have mixed sizes {sorted(set(dims))}",
            code="mixed_embedding_dims",
        )
    dim = int(dims[0])
    has_image = np.fromiter((b is not None for b in images), dtype=bool, count=len(images))
    windows = np.asarray(text_len, dtype=np.int64) // (2 * dim)
    has_text = windows > 0
    image = embeddings.rows(b"".join(b for b in images if b is not None), dim)
    text = embeddings.rows(b"".join(b for b in texts if b is not None), dim)
    counts = windows[has_text]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return StoredEmbeddings(
        ids=list(ids),
        tenant_ids=np.asarray(tenants, dtype=np.int64),
        tenant_names=names,
        image=image,
        image_items=np.flatnonzero(has_image).astype(np.int64),
        text=text,
        text_items=np.flatnonzero(has_text).astype(np.int64),
        text_starts=starts,
        model_revision=revision,
    )


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
