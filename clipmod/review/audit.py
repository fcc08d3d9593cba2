"""The append-only audit log: every sign-in, claim, decision, reveal, search, bulk action and bank
addition from the dashboard.

Rows are written in the same transaction as the change they describe, so the log can neither
miss a decision nor record one that was rolled back. The CSV export neutralises cells that a
spreadsheet would run as a formula (OWASP "CSV injection"), since emails and search text are
typed by people.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from clipmod.models import AuditEvent, Item, Tenant, User, utcnow
from clipmod.review.access import aware

ACTIONS = (
    "login",
    "login_failed",
    "logout",
    "claim",
    "decide",
    "bulk_decide",
    "reveal",
    "search",
    "similar",
    "user_created",
    "bank_add",  # an item added to a bank from its dashboard page (api.dashboard.banking)
    "retry",  # failed items queued again (api.dashboard.failures)
    # policy changes (clipmod.policy.ship), from the editor, the CLI or the API
    "policy_publish",
    "policy_activate",
    "policy_rollback",
    "policy_shadow",
    "policy_shadow_stop",
)
POLICY_ACTIONS = tuple(a for a in ACTIONS if a.startswith("policy_"))


def record(
    session: Session,
    action: str,
    *,
    user: User | None = None,
    actor: str | None = None,
    item: Item | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(
        at=utcnow(),
        user_id=user.id if user else None,
        actor=actor or (user.email if user else "system"),
        action=action,
        item_id=item.id if item else None,
        tenant_id=item.tenant_id if item else None,
        detail=detail or {},
    )
    session.add(event)
    return event


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    item_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    actions: tuple[str, ...] = ()  # any of these (the policy history)


def _query(filt: AuditFilter) -> Select[AuditEvent, str]:
    stmt = select(AuditEvent, Tenant.name).outerjoin(Tenant, Tenant.id == AuditEvent.tenant_id)
    if filt.actor:
        stmt = stmt.where(AuditEvent.actor.contains(filt.actor.strip().lower(), autoescape=True))
    if filt.action:
        stmt = stmt.where(AuditEvent.action == filt.action)
    if filt.actions:
        stmt = stmt.where(AuditEvent.action.in_(filt.actions))
    if filt.item_id:
        stmt = stmt.where(AuditEvent.item_id == filt.item_id.strip())
    if filt.since:
        stmt = stmt.where(AuditEvent.at >= filt.since)
    if filt.until:
        stmt = stmt.where(AuditEvent.at < filt.until)
    return stmt


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    item_id: str | None
    tenant: str | None
    detail: dict[str, Any]


def events(
    session: Session, filt: AuditFilter, *, limit: int | None = 100, offset: int = 0
) -> list[AuditRow]:
    """Newest first."""
    stmt = _query(filt).order_by(AuditEvent.id.desc()).offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        AuditRow(e.id, aware(e.at), e.actor, e.action, e.item_id, tenant, e.detail or {})
        for e, tenant in session.execute(stmt)
    ]


def count(session: Session, filt: AuditFilter) -> int:
    sub = _query(filt).subquery()
    return int(session.scalar(select(func.count()).select_from(sub)) or 0)


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(rows: Iterable[AuditRow]) -> Iterator[str]:
    """CSV lines, header first, streamed."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "at", "actor", "action", "item_id", "tenant", "detail"])
    for row in rows:
        detail = json.dumps(row.detail, sort_keys=True, ensure_ascii=False)
        writer.writerow(
            [
                row.id,
                row.at.isoformat(),
                _cell(row.actor),
                row.action,
                row.item_id or "",
                _cell(row.tenant or ""),
                _cell(detail),
            ]
        )
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()
