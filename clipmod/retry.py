"""Failed items, and sending them back to the queue.

A failure is final for the pipeline, but many failures are about the moment, not the item: the
image URL's server was down (`url_unreachable`, `url_timeout`, `url_http_error`), workers kept
dying during a bad deploy or an outage until the reconciler gave up on the item
(`scoring_error`), the blob volume was not mounted (`blob_missing`). Once the incident is over,
an operator queues them again here (the dashboard's Failed page, `clipmod items retry`, or a
platform through `POST /v1/items/<id>/retry`): the item keeps its id, its external_id and its
history, nothing is uploaded again, and the platform gets an `item.scored` callback after the
`item.failed` one. Permanent failures (a corrupt image, a URL that is not an image) may be
retried too, and fail again; the dashboard and the CLI pick the transient codes by default.

The caller wakes a worker after its commit (`wake`); one wake-up is enough, because a worker
keeps claiming the oldest queued items until none are left, and retried items are old.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from clipmod.errors import ClipmodError
from clipmod.models import Item, ItemStatus, utcnow
from clipmod.queue import enqueue_scoring

log = logging.getLogger(__name__)

# Failures that are about the moment, not the item: worth retrying once the cause is fixed.
TRANSIENT_CODES = (
    "scoring_error",
    "url_unreachable",
    "url_timeout",
    "url_http_error",
    "blob_missing",
)
# The most one call re-queues: a retry of a whole outage's failures goes in slices an operator
# can watch drain, and one UPDATE never holds locks on an unbounded number of rows.
MAX_RETRY = 10_000


@dataclass(frozen=True)
class FailedFilter:
    """Which failed items: None means any (every tenant, every code, every item)."""

    tenant_ids: Sequence[int] | None = None
    codes: Sequence[str] | None = None
    item_ids: Sequence[str] | None = None

    def where(self) -> list[ColumnElement[bool]]:
        clauses = [Item.status == ItemStatus.FAILED, Item.deleted_at.is_(None)]
        if self.tenant_ids is not None:
            clauses.append(Item.tenant_id.in_(list(self.tenant_ids)))
        if self.codes is not None:
            clauses.append(Item.error_code.in_(list(self.codes)))
        if self.item_ids is not None:
            clauses.append(Item.id.in_(list(self.item_ids)))
        return clauses


def by_code(session: Session, which: FailedFilter) -> dict[str, int]:
    """How many failed items there are per error code, most first."""
    rows = session.execute(
        select(Item.error_code, func.count())
        .where(*which.where())
        .group_by(Item.error_code)
        .order_by(func.count().desc(), Item.error_code)
    ).all()
    return {str(code or "unknown"): int(n) for code, n in rows}


def newest(session: Session, which: FailedFilter, limit: int = 100) -> list[Item]:
    """The most recently failed items first."""
    return list(
        session.scalars(
            select(Item).where(*which.where()).order_by(Item.updated_at.desc()).limit(limit)
        )
    )


def requeue(session: Session, which: FailedFilter, limit: int = MAX_RETRY) -> list[str]:
    """Put matching failed items back to `queued` (attempts and error cleared), the longest
    failed first; returns their ids. Commit, then `wake`."""
    ids = list(
        session.scalars(
            select(Item.id).where(*which.where()).order_by(Item.updated_at).limit(limit)
        )
    )
    if not ids:
        return []
    # The status test again in the UPDATE: a retry racing this one re-queues each item once.
    done = session.scalars(
        update(Item)
        .where(Item.id.in_(ids), Item.status == ItemStatus.FAILED)
        .values(
            status=ItemStatus.QUEUED,
            attempts=0,
            error_code=None,
            error_message=None,
            claimed_by=None,
            lease_until=None,
            updated_at=utcnow(),
        )
        .returning(Item.id)
    )
    return list(done)


def wake(app: Celery, ids: Sequence[str]) -> bool:
    """After the commit: one wake-up for all of them (see the module's docstring); False if the
    broker could not be told. That loses nothing: the items are queued in the database, and the
    reconciler wakes a worker for them once they are older than `CLIPMOD_STUCK_AFTER_S`."""
    if not ids:
        return True
    try:
        enqueue_scoring(app, [ids[0]], force=True)
    except ClipmodError:
        log.warning("%d items queued again; the reconciler will wake a worker for them", len(ids))
        return False
    return True
