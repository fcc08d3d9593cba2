"""Callbacks are born in the same transaction as the verdict they announce (a transactional
outbox): a `before_flush` hook on the worker's sessions adds a `Delivery` row beside every new
verdict, and beside every item that just failed, for tenants with a callback URL.

So a verdict is never written without its callback being owed, and a rolled-back batch owes
nothing; the delivery worker (`workers.delivery`) picks the rows up from the database. The
scoring pipeline needs no change and no knowledge of callbacks: `install` is one line in the
worker's start-up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
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


def install(sessions: sessionmaker[Session]) -> None:
    """Owe callbacks for verdicts and failures written through `sessions`."""
    if not event.contains(sessions, "before_flush", _before_flush):
        event.listen(sessions, "before_flush", _before_flush)
