"""Callbacks are born in the same transaction as the verdict they announce (a transactional
outbox): a `Delivery` row beside every new verdict, and beside every item that just failed, for
tenants with a callback URL.

So a verdict is never written without its callback being owed, and a rolled-back batch owes
nothing; the delivery worker (`workers.delivery`) picks the rows up from the database. Two ways
in: the worker's bulk writes (Core statements, which no ORM event sees) call `owe` with the ids
they finished, inside their transaction; writes through the ORM are covered by a `before_flush`
hook (`install`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from clipmod.models import (
    Delivery,
    Item,
    ItemStatus,
    PolicyVersion,
    Tenant,
    Verdict,
    new_id,
    utcnow,
)
from clipmod.views import error_view, iso, verdict_view

SCORED = "item.scored"
FAILED = "item.failed"


def payload(delivery_id: str, event_type: str, item: Item, verdict: dict[str, Any] | None) -> Any:
    """What the platform receives: no text and no image, only what it needs to act."""
    return {
        "id": delivery_id,
        "type": event_type,
        "created_at": iso(utcnow()),
        "data": {
            "item": {
                "id": item.id,
                "external_id": item.external_id,
                "status": str(item.status),
                "metadata": item.meta,
                "verdict": verdict,
                "error": error_view(item),
            }
        },
    }


def _owe(session: Session, item: Item, event_type: str, verdict: dict[str, Any] | None) -> None:
    tenant = session.get(Tenant, item.tenant_id)
    if tenant is None or not tenant.callback_url:
        return
    delivery_id = new_id()
    session.add(
        Delivery(
            id=delivery_id,
            tenant_id=tenant.id,
            item_id=item.id,
            event=event_type,
            url=tenant.callback_url,
            payload=payload(delivery_id, event_type, item, verdict),
        )
    )


def _before_flush(session: Session, _context: object, _instances: object) -> None:
    with session.no_autoflush:
        for obj in list(session.new):
            if isinstance(obj, Verdict):
                item = session.get(Item, obj.item_id)
                version = session.get(PolicyVersion, obj.policy_version_id)
                if item is not None and version is not None:
                    if obj.scored_at is None:
                        obj.scored_at = utcnow()  # the column default, needed in the payload now
                    _owe(session, item, SCORED, verdict_view(obj, version))
        for obj in list(session.dirty):
            if not isinstance(obj, Item):
                continue
            if ItemStatus.FAILED in inspect(obj).attrs.status.history.added:
                _owe(session, obj, FAILED, None)


def owe(session: Session, scored: Sequence[str], failed: Sequence[str]) -> None:
    """Owe callbacks for items a bulk write just scored or failed (inside its transaction)."""
    if not (scored or failed):
        return
    hooked = select(Tenant.id).where(Tenant.callback_url.is_not(None), Tenant.callback_url != "")
    tenants = set(session.scalars(hooked))
    if not tenants:
        return  # the common case costs this one small query
    if scored:
        rows = session.execute(
            select(Item, Verdict, PolicyVersion)
            .join(Verdict, Verdict.item_id == Item.id)
            .join(PolicyVersion, PolicyVersion.id == Verdict.policy_version_id)
            .where(Item.id.in_(list(scored)), Item.tenant_id.in_(tenants))
        ).all()
        for item, verdict, version in rows:
            _owe(session, item, SCORED, verdict_view(verdict, version))
    if failed:
        already = select(Delivery.item_id).where(Delivery.event == FAILED)
        items = session.scalars(
            select(Item).where(
                Item.id.in_(list(failed)),
                Item.tenant_id.in_(tenants),
                Item.status == ItemStatus.FAILED,
                Item.id.not_in(already),
            )
        )
        for item in items:
            _owe(session, item, FAILED, None)


def install(sessions: sessionmaker[Session]) -> None:
    """Owe callbacks for verdicts and failures written through `sessions`."""
    if not event.contains(sessions, "before_flush", _before_flush):
        event.listen(sessions, "before_flush", _before_flush)
