"""The database side of a batch: claim under a lease, write in bulk, hand back.

A claim is one conditional UPDATE, so two workers can never both hold an item: an item is
claimable when it is `queued`, or `processing` under a lease that ran out (its worker died) or
that this same worker holds (its own message came back after a failed batch). The claim names
the worker and holds for `lease_s`; the worker renews it while it works (`renew`), so a lease
can be short and a dead worker's items come back within seconds (see `workers.sweeper`).

A claim can also `fill` the batch with the oldest queued items, named by no message: the
database is the queue (see `clipmod.queue`). On PostgreSQL the rows are picked with
`FOR UPDATE SKIP LOCKED`, so workers filling at the same moment take different items instead
of queueing on each other's row locks; SQLite has one writer at a time and needs no lock hint.

The write is a fixed handful of statements per batch, whatever its size: one UPDATE that flips
the batch's items to `scored` and returns those still waiting (a redelivery, a duplicate or a
slower worker that finished first drops out here, under the row lock), then one multi-row
INSERT each for verdicts, embeddings and shadow verdicts with ON CONFLICT DO NOTHING
(`clipmod.bulk`), so even a race the UPDATE did not see cannot write a second verdict. No
per-item SELECT.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from clipmod import bulk, outbox
from clipmod.models import Item, ItemEmbedding, ItemStatus, ShadowVerdict, Tenant, Verdict, utcnow

MAX_ATTEMPTS = 3
WAITING = (ItemStatus.QUEUED, ItemStatus.PROCESSING)


def worker_identity() -> str:
    """Unique per process and readable in the table: host, pid and a random tail (pid reuse)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Claimed:
    id: str
    tenant_id: int
    tenant: str
    image_sha256: str | None
    text: str | None
    image_url: str | None = None


def claimable(worker_id: str, now: Any) -> ColumnElement[bool]:
    """Queued, or processing under a lease that expired (or is this worker's own)."""
    return or_(
        Item.status == ItemStatus.QUEUED,
        and_(
            Item.status == ItemStatus.PROCESSING,
            or_(Item.lease_until.is_(None), Item.lease_until < now, Item.claimed_by == worker_id),
        ),
    )


def _take(
    session: Session, which: ColumnElement[bool], worker_id: str, lease_s: float, now: Any
) -> list[Any]:
    return list(
        session.execute(
            update(Item)
            .where(which)
            .values(
                status=ItemStatus.PROCESSING,
                claimed_by=worker_id,
                lease_until=now + timedelta(seconds=lease_s),
                attempts=Item.attempts + 1,
                updated_at=now,
            )
            .returning(
                Item.id,
                Item.tenant_id,
                Item.image_sha256,
                Item.text,
                Item.image_url,
                Item.created_at,
            )
            .execution_options(synchronize_session=False)
        ).all()
    )


def claim(
    session: Session, item_ids: Iterable[str], worker_id: str, lease_s: float, fill: int = 0
) -> list[Claimed]:
    """Take what is still pending among `item_ids` for `lease_s` seconds, in their given order,
    then up to `fill` items in all with the oldest queued ones."""
    order = {item_id: i for i, item_id in enumerate(dict.fromkeys(item_ids))}
    now = utcnow()
    rows: list[Any] = []
    if order:
        named = and_(Item.id.in_(list(order)), claimable(worker_id, now))
        rows = sorted(_take(session, named, worker_id, lease_s, now), key=lambda r: order[r.id])
    if fill > len(rows):
        # A materialised CTE, not `IN (subquery)`: PostgreSQL may run such a subquery again
        # for each row it updates, and with SKIP LOCKED each run picks other rows (a claim of 3
        # took 6 in a test).
        oldest = (
            select(Item.id)
            .where(Item.status == ItemStatus.QUEUED)
            .order_by(Item.created_at)
            .limit(fill - len(rows))
            .with_for_update(skip_locked=True)
            .cte("oldest")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        queued = and_(Item.id.in_(select(oldest.c.id)), Item.status == ItemStatus.QUEUED)
        more = _take(session, queued, worker_id, lease_s, now)
        rows += sorted(more, key=lambda r: (r.created_at, r.id))
    tenant_ids = {r.tenant_id for r in rows}
    names: dict[int, str] = {}
    if tenant_ids:
        query = select(Tenant.id, Tenant.name).where(Tenant.id.in_(tenant_ids))
        names = dict(session.execute(query).all())
    return [
        Claimed(r.id, r.tenant_id, names[r.tenant_id], r.image_sha256, r.text, r.image_url)
        for r in rows
    ]


def renew(session: Session, worker_id: str, lease_s: float) -> int:
    """Extend every lease this worker holds; returns how many items it holds."""
    result = session.execute(
        update(Item)
        .where(Item.claimed_by == worker_id, Item.status == ItemStatus.PROCESSING)
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass
class Scored:
    """The rows one scored item adds, as column dicts for the bulk INSERTs."""

    item_id: str
    verdict: dict[str, Any]
    embedding: dict[str, Any]
    shadow: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    item_id: str
    code: str
    message: str


def _table(model: type[Any]) -> Table:
    return cast("Table", model.__table__)


def write(session: Session, scored: Sequence[Scored], failed: Sequence[Failed]) -> list[str]:
    """Finish a batch; returns the ids this call scored (the rest were finished elsewhere)."""
    now = utcnow()
    live: list[str] = []
    if scored:
        live = list(
            session.scalars(
                update(Item)
                .where(Item.id.in_([s.item_id for s in scored]), Item.status.in_(WAITING))
                .values(
                    status=ItemStatus.SCORED,
                    claimed_by=None,
                    lease_until=None,
                    error_code=None,
                    error_message=None,
                    updated_at=now,
                )
                .returning(Item.id)
                .execution_options(synchronize_session=False)
            )
        )
    keep = set(live)
    rows = [s for s in scored if s.item_id in keep]
    if rows:
        bulk.insert_rows(session, _table(Verdict), [s.verdict for s in rows])
        bulk.insert_rows(session, _table(ItemEmbedding), [s.embedding for s in rows])
        shadows = [s.shadow for s in rows if s.shadow is not None]
        if shadows:
            bulk.insert_rows(session, _table(ShadowVerdict), shadows)
    if failed:
        table = _table(Item)
        items = table.c
        session.execute(
            update(table)
            # no IN (…): an expanding parameter cannot be part of an executemany
            .where(items.id == bindparam("b_id"), or_(*(items.status == s for s in WAITING)))
            .values(
                status=ItemStatus.FAILED,
                error_code=bindparam("b_code"),
                error_message=bindparam("b_message"),
                claimed_by=None,
                lease_until=None,
                updated_at=now,
            ),
            [{"b_id": f.item_id, "b_code": f.code, "b_message": f.message} for f in failed],
        )
    outbox.owe(session, live, [f.item_id for f in failed])
    return live


def release(
    session: Session, worker_id: str, item_ids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """After an unexpected failure: requeue this worker's items with attempts left, fail the rest.

    Returns (requeued, failed).

    Only items this worker still holds are touched: one whose lease ran out and that another
    worker took is that worker's now.
    """
    mine = and_(
        Item.id.in_(list(item_ids)),
        Item.status == ItemStatus.PROCESSING,
        Item.claimed_by == worker_id,
    )
    return requeue_or_fail(session, mine, f"scoring failed {MAX_ATTEMPTS} times; see worker logs")


def requeue_or_fail(
    session: Session, which: ColumnElement[bool], reason: str
) -> tuple[list[str], list[str]]:
    """Items matching `which` go back to `queued` while they have attempts left; the rest fail
    with `scoring_error` (`reason` is the message) and their callbacks are owed. The one rule
    for a batch that failed (`release`) and for a dead worker's items (`workers.sweeper`).

    Returns (requeued, failed).
    """
    free = {"claimed_by": None, "lease_until": None, "updated_at": utcnow()}
    requeue = list(
        session.scalars(
            update(Item)
            .where(which, Item.attempts < MAX_ATTEMPTS)
            .values(status=ItemStatus.QUEUED, **free)
            .returning(Item.id)
            .execution_options(synchronize_session=False)
        )
    )
    failed = list(
        session.scalars(
            update(Item)
            .where(which, Item.attempts >= MAX_ATTEMPTS)
            .values(
                status=ItemStatus.FAILED, error_code="scoring_error", error_message=reason, **free
            )
            .returning(Item.id)
            .execution_options(synchronize_session=False)
        )
    )
    outbox.owe(session, [], failed)
    return requeue, failed
