"""Which stored traffic a backtest reads: the last N items or a time range, one tenant or all.

`traffic.load_embeddings` reads everything since a moment in one pass, which is what makes a
100k-item backtest take about a second; the window narrows that read where it can (`since`) and
masks the rest (`until`, a tenant, exactly N) on the decoded arrays, which costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clipmod.errors import InvalidInput
from clipmod.models import Item, ItemEmbedding, Tenant
from clipmod.policy.traffic import Progress, StoredEmbeddings, as_utc, load_embeddings
from clipmod.traffic.ids import ItemIds

MAX_LAST = 1_000_000


@dataclass(frozen=True)
class Window:
    last: int | None = None  # the newest N items (within since/until, if given)
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    tenant: str | None = None

    def describe(self) -> str:
        parts = [f"the last {self.last:,} items" if self.last else "all stored items"]
        parts.append(f"of tenant {self.tenant}" if self.tenant else "of every tenant")
        if self.since:
            parts.append(f"from {as_utc(self.since):%Y-%m-%d %H:%M} UTC")
        if self.until:
            parts.append(f"until {as_utc(self.until):%Y-%m-%d %H:%M} UTC")
        return " ".join(parts)


def _tenant_id(session: Session, name: str | None) -> int | None:
    if name is None:
        return None
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == name))
    if tenant_id is None:
        raise InvalidInput(f"no tenant named {name!r}", code="unknown_tenant")
    return tenant_id


def _stored(session: Session, revision: str, window: Window, tenant_id: int | None) -> int:
    stmt = (
        select(func.count())
        .select_from(ItemEmbedding)
        .join(Item, Item.id == ItemEmbedding.item_id)
        .where(ItemEmbedding.model_revision == revision)
    )
    if tenant_id is not None:
        stmt = stmt.where(Item.tenant_id == tenant_id)
    if window.since:
        stmt = stmt.where(Item.created_at >= as_utc(window.since))
    return int(session.scalar(stmt) or 0)


def _wanted_ids(
    session: Session, revision: str, window: Window, tenant_id: int | None
) -> tuple[set[str] | None, datetime | None]:
    """The item ids the window holds (None: no id filter needed) and the earliest moment to read."""
    if not window.last and not window.until:
        return None, window.since
    if (
        window.last
        and not window.until
        and _stored(session, revision, window, tenant_id) <= window.last
    ):
        return None, window.since  # "the last 100,000" of fewer: all of them, no id list needed
    stmt = (
        select(Item.id, Item.created_at)
        .join(ItemEmbedding, ItemEmbedding.item_id == Item.id)
        .where(ItemEmbedding.model_revision == revision)
    )
    if tenant_id is not None:
        stmt = stmt.where(Item.tenant_id == tenant_id)
    if window.since:
        stmt = stmt.where(Item.created_at >= as_utc(window.since))
    if window.until:
        stmt = stmt.where(Item.created_at < as_utc(window.until))
    if window.last:
        stmt = stmt.order_by(Item.created_at.desc(), Item.id.desc()).limit(window.last)
    rows = session.execute(stmt).all()
    earliest = min((created for _, created in rows), default=None)
    return {item_id for item_id, _ in rows}, earliest if earliest is not None else window.since


def load_window(
    session: Session, revision: str, window: Window, *, progress: Progress | None = None
) -> StoredEmbeddings:
    """The stored embeddings of the items in `window`."""
    if window.last is not None and not 0 < window.last <= MAX_LAST:
        raise InvalidInput(f"last: between 1 and {MAX_LAST:,} items", code="invalid_window")
    if window.since and window.until and as_utc(window.until) <= as_utc(window.since):
        raise InvalidInput("until: must be after since", code="invalid_window")
    tenant_id = _tenant_id(session, window.tenant)
    wanted, since = _wanted_ids(session, revision, window, tenant_id)
    if wanted is not None and not wanted:
        return _empty(session, revision)
    emb = load_embeddings(session, revision, since=since, progress=progress)
    keep = np.ones(len(emb), dtype=bool)
    if tenant_id is not None:
        keep &= emb.tenant_ids == tenant_id
    if wanted is not None:
        keep &= np.fromiter((i in wanted for i in emb.ids), dtype=bool, count=len(emb))
    return emb if keep.all() else subset(emb, keep)


def _empty(session: Session, revision: str) -> StoredEmbeddings:
    names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    rows = np.zeros((0, 1), dtype=np.float16)
    none = np.zeros(0, dtype=np.int64)
    return StoredEmbeddings(ItemIds.of([]), none, names, rows, none, rows, none, none, revision)


def subset(emb: StoredEmbeddings, keep: npt.NDArray[np.bool_]) -> StoredEmbeddings:
    """The items where `keep` is true, with their image rows and text windows, re-indexed."""
    new_index = np.full(len(emb), -1, dtype=np.int64)
    new_index[keep] = np.arange(int(keep.sum()))
    img_keep = keep[emb.image_items]
    windows = np.diff(np.append(emb.text_starts, len(emb.text))).astype(np.int64)
    txt_keep = keep[emb.text_items]
    row_keep = np.repeat(txt_keep, windows)
    kept_windows = windows[txt_keep]
    starts = np.concatenate([[0], np.cumsum(kept_windows)[:-1]]).astype(np.int64)
    return StoredEmbeddings(
        ids=ItemIds.of([i for i, k in zip(emb.ids, keep.tolist(), strict=True) if k]),
        tenant_ids=emb.tenant_ids[keep],
        tenant_names=emb.tenant_names,
        image=emb.image[img_keep],
        image_items=new_index[emb.image_items[img_keep]],
        text=emb.text[row_keep] if len(row_keep) else emb.text[:0],
        text_items=new_index[emb.text_items[txt_keep]],
        text_starts=starts if len(kept_windows) else np.zeros(0, dtype=np.int64),
        model_revision=emb.model_revision,
    )
