"""Which items a person may see: a moderator their assigned tenants, an admin everything.

Another tenant's item is "not found", never "forbidden", as in the API: a moderator must not
learn that an id exists outside their tenants.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_
from sqlalchemy.orm import Session

from clipmod.errors import NotFound
from clipmod.models import Item, ItemStatus, User


def visible_tenant_ids(user: User) -> list[int] | None:
    """None means every tenant (admins)."""
    return None if user.is_admin else [t.id for t in user.tenants]


def tenant_clause(user: User) -> ColumnElement[bool]:
    """Items this person may see: their tenants', and never a deleted one (its tombstone is
    for audits; the platform asked for the content to be gone)."""
    live = Item.status != ItemStatus.DELETED
    ids = visible_tenant_ids(user)
    return live if ids is None else and_(live, Item.tenant_id.in_(ids))


def visible_item(session: Session, user: User, item_id: str) -> Item:
    item = session.get(Item, item_id) if len(item_id) <= 32 else None
    ids = visible_tenant_ids(user)
    if (
        item is None
        or item.status == ItemStatus.DELETED
        or (ids is not None and item.tenant_id not in ids)
    ):
        raise NotFound(f"no item {item_id[:40]!r} in your tenants", code="item_not_found")
    return item


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; every one we store is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
