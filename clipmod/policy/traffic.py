"""Stored traffic as arrays: every item's embeddings for one model revision.

Backtests, lint and suggestions re-score history without running the image model, so what they
need is the worker's stored L2-normalised embeddings as two big float16 matrices (image rows and
text-window rows) plus which item each row belongs to. With a `TrafficStore` (what the CLI and
the API pass) they come memory-mapped from its column files after a sync, with no per-row work
at all (once items were deleted, their tombstoned rows are left out by one copy of the live
rows); without one, one SQL query reads and decodes them (small databases, and the reference
the store is tested against). The rows stay float16 until a scorer widens a block at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clipmod import embeddings
from clipmod.errors import ClipmodError
from clipmod.models import Decision, Item, ItemEmbedding, Tenant
from clipmod.traffic.ids import ItemIds
from clipmod.traffic.sync import TrafficStore

F16 = npt.NDArray[np.float16]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Progress = Callable[[int], None]

_CHUNK = 20_000  # rows per fetch: progress granularity, not a memory bound


@dataclass(frozen=True)
class StoredEmbeddings:
    """Every stored embedding of one model revision; item i is row i of `ids`."""

    ids: ItemIds
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

    def subset(self, keep: Bools) -> StoredEmbeddings:
        """The items where `keep` holds, rows copied out of the (possibly mapped) arrays."""
        if keep.all():
            return self
        new_index = np.cumsum(keep) - 1
        img = keep[self.image_items]
        windows = np.diff(np.append(self.text_starts, len(self.text)))
        txt = keep[self.text_items]
        counts = windows[txt]
        return StoredEmbeddings(
            ids=ItemIds(self.ids.raw[keep]),
            tenant_ids=self.tenant_ids[keep],
            tenant_names=self.tenant_names,
            image=self.image[img],
            image_items=new_index[self.image_items[img]].astype(np.int64),
            text=self.text[np.repeat(txt, windows)],
            text_items=new_index[self.text_items[txt]].astype(np.int64),
            text_starts=_starts(counts),
            model_revision=self.model_revision,
        )


def _starts(counts: npt.NDArray[np.integer]) -> I64:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def load_embeddings(
    session: Session,
    revision: str,
    *,
    since: datetime | None = None,
    labelled_only: bool = False,
    progress: Progress | None = None,
    store: TrafficStore | None = None,
) -> StoredEmbeddings:
    """Stored embeddings (`labelled_only`: items with a Decision; `since`: created since)."""
    if store is not None:
        return _from_store(session, store, since=since, labelled_only=labelled_only, p=progress)
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
        return StoredEmbeddings(
            ItemIds.of([]), none, names, empty, none, empty, none, none, revision
        )
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
    return StoredEmbeddings(
        ids=ItemIds.of(list(ids)),
        tenant_ids=np.asarray(tenants, dtype=np.int64),
        tenant_names=names,
        image=embeddings.rows(b"".join(b for b in images if b is not None), dim),
        image_items=np.flatnonzero(has_image).astype(np.int64),
        text=embeddings.rows(b"".join(b for b in texts if b is not None), dim),
        text_items=np.flatnonzero(has_text).astype(np.int64),
        text_starts=_starts(windows[has_text]),
        model_revision=revision,
    )


def _from_store(
    session: Session,
    store: TrafficStore,
    *,
    since: datetime | None,
    labelled_only: bool,
    p: Progress | None,
) -> StoredEmbeddings:
    cols = store.read(session, p)
    windows = np.asarray(cols.items["windows"], dtype=np.int64)
    text_items = np.flatnonzero(windows > 0).astype(np.int64)
    live = cols.live()
    emb = StoredEmbeddings(
        ids=store.item_ids(cols) if live is None else ItemIds(cols.ids),
        tenant_ids=np.asarray(cols.items["tenant"], dtype=np.int64),
        tenant_names=dict(session.execute(select(Tenant.id, Tenant.name)).all()),
        image=cols.image,
        image_items=np.asarray(cols.image_items),
        text=cols.text,
        text_items=text_items,
        text_starts=_starts(windows[text_items]),
        model_revision=store.revision,
    )
    if live is not None:  # deleted items first, so an id below names its one live row
        emb = replace(emb.subset(live), ids=store.item_ids(cols))  # the cached lookup index
        created = np.asarray(cols.items["created_us"])[live]
    else:
        created = np.asarray(cols.items["created_us"])
    keep = np.ones(len(emb), dtype=bool)
    if since is not None:
        cutoff = int(as_utc(since).timestamp() * 1_000_000)
        keep &= created >= cutoff
    if labelled_only:
        decided = list(set(session.scalars(select(Decision.item_id))))
        where = emb.ids.positions(decided)
        labelled = np.zeros(len(emb), dtype=bool)
        labelled[where[where >= 0]] = True
        keep &= labelled
    return emb.subset(keep)


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
