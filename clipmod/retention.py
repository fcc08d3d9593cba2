"""Deleting items, on request or when they pass `CLIPMOD_RETENTION_DAYS`.

Deleting keeps a tombstone: the row stays with `status = deleted`, its id, tenant, external id,
timestamps and verdict (what was decided, for audits), and loses what the platform sent: text,
metadata, image URL, image digest and dimensions, the content hash. The embeddings go (they
describe the content; migration 0008's trigger logs each deleted row, so the traffic store's
next read leaves it out of backtests and search), and the blob goes when no other item and no
bank entry uses the same bytes.

One conditional UPDATE decides who deletes an item, so two processes purging at once (or a
purge racing an API call) delete it once; the loser sees `already_deleted`. The tombstone's
status also stops a worker that was scoring the item: the pipeline writes verdicts only for
items still queued or processing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection
from datetime import timedelta

from sqlalchemy import delete, null, select, union, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.models import BankEntry, Item, ItemEmbedding, ItemStatus, utcnow
from clipmod.storage import BlobStore

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    DELETED = "deleted"
    ALREADY_DELETED = "already_deleted"
    NOT_FOUND = "not_found"


def blobs_in_use(session: Session, digests: Collection[str]) -> set[str]:
    """Those of `digests` that a row names: an item's image, or a bank entry's (an uploaded
    bank image is kept so the entry can be embedded again for another model)."""
    if not digests:
        return set()
    wanted = list(digests)
    named = union(
        select(Item.image_sha256).where(Item.image_sha256.in_(wanted)),
        select(BankEntry.image_sha256).where(BankEntry.image_sha256.in_(wanted)),
    )
    return {digest for digest in session.scalars(named) if digest is not None}


def blob_in_use(sessions: sessionmaker[Session], digest: str) -> bool:
    with sessions() as session:
        return bool(blobs_in_use(session, [digest]))


def delete_item(
    sessions: sessionmaker[Session], blobs: BlobStore, item_id: str, tenant_id: int | None = None
) -> Outcome:
    """Tombstone one item (of `tenant_id`, when given) and drop its content."""
    with transaction(sessions) as session:
        query = select(Item.status, Item.image_sha256).where(Item.id == item_id)
        if tenant_id is not None:
            query = query.where(Item.tenant_id == tenant_id)
        found = session.execute(query).first()
        if found is None:
            return Outcome.NOT_FOUND
        status, digest = found
        moved = session.execute(
            update(Item)
            .where(Item.id == item_id, Item.status != ItemStatus.DELETED)
            .values(
                status=ItemStatus.DELETED,
                deleted_at=utcnow(),
                updated_at=utcnow(),
                text=None,
                meta=null(),
                image_url=None,
                image_sha256=None,
                image_format=None,
                image_width=None,
                image_height=None,
                content_hash=None,
            )
        )
        if status == ItemStatus.DELETED or not moved.rowcount:  # type: ignore[attr-defined]
            return Outcome.ALREADY_DELETED
        session.execute(delete(ItemEmbedding).where(ItemEmbedding.item_id == item_id))
    if digest:
        blobs.remove_unless(digest, lambda: blob_in_use(sessions, digest))
    return Outcome.DELETED


def purge_expired(
    sessions: sessionmaker[Session], blobs: BlobStore, retention_days: int, batch: int = 200
) -> int:
    """Delete every item older than `retention_days` (0: keep forever); returns how many.

    Works in batches so a first run over a large backlog holds no long transaction.
    """
    if retention_days <= 0:
        return 0
    cutoff = utcnow() - timedelta(days=retention_days)
    purged = 0
    while True:
        with sessions() as session:
            ids = session.scalars(
                select(Item.id)
                .where(Item.created_at < cutoff, Item.status != ItemStatus.DELETED)
                .order_by(Item.created_at)
                .limit(batch)
            ).all()
        if not ids:
            break
        done = [delete_item(sessions, blobs, item_id) for item_id in ids]
        purged += sum(1 for outcome in done if outcome == Outcome.DELETED)
        if len(ids) < batch:
            break
    if purged:
        log.info("retention: deleted %d items older than %d days", purged, retention_days)
    return purged
