"""The review queue: what waits for a person, oldest first.

An item waits when its verdict sent it to review (`action == review`, audit samples included)
and nobody has decided it yet. Escalated items leave the moderators' queue and wait in the
admins' instead, until an admin's decision supersedes the escalation. An item's current
decision is the one no later decision supersedes (see `Decision.supersedes_id`).

Tenant and "decided yet?" are SQL. The category and score-band filters look inside the
verdict's JSON list of categories, which no portable SQL can index, so they are applied in
Python to the (tenant-filtered, undecided) rows: review queues hold thousands of items, not
millions, and this keeps one query shape for SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.orm import Session, aliased

from clipmod.models import Action, Claim, Decision, DecisionAction, Item, Tenant, User, Verdict
from clipmod.review.access import aware, tenant_clause

_later = aliased(Decision)


def current_decisions() -> Select[Any]:
    """Decisions nothing supersedes: one per decided item."""
    return select(Decision).where(~exists().where(_later.supersedes_id == Decision.id))


def _current_exists(*conditions: Any) -> Any:
    return exists().where(
        Decision.item_id == Item.id,
        ~exists().where(_later.supersedes_id == Decision.id),
        *conditions,
    )


@dataclass(frozen=True)
class QueueFilter:
    tenant: str | None = None
    category: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    escalated: bool = False  # the admins' queue of escalated items

    def as_args(self) -> dict[str, Any]:
        """The filter as query-string arguments (for links that keep it)."""
        out = {
            "tenant": self.tenant or "",
            "category": self.category or "",
            "min": "" if self.min_score is None else f"{self.min_score:g}",
            "max": "" if self.max_score is None else f"{self.max_score:g}",
            "queue": "escalated" if self.escalated else "",
        }
        return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class QueueRow:
    item_id: str
    external_id: str | None
    tenant: str
    created_at: datetime
    action: str
    audit: bool
    top_category: str | None
    top_score: float
    score: float  # the score the filter looked at (the chosen category's, else the top one)
    has_image: bool
    has_text: bool
    text_preview: str
    claimed_by: str | None
    flagged: bool  # some category reached its review threshold (else: an audit sample)
    categories: list[dict[str, Any]] = field(repr=False)


def _base(user: User, filt: QueueFilter) -> Select[Item, Verdict, str]:
    waiting = or_(Verdict.action == Action.REVIEW, Verdict.audit.is_(True))
    if filt.escalated:
        decided = _current_exists(Decision.action == DecisionAction.ESCALATE)
    else:
        decided = ~_current_exists()
    stmt = (
        select(Item, Verdict, Tenant.name)
        .join(Verdict, Verdict.item_id == Item.id)
        .join(Tenant, Tenant.id == Item.tenant_id)
        .where(waiting, decided, tenant_clause(user))
        .order_by(Item.created_at, Item.id)
    )
    if filt.tenant:
        stmt = stmt.where(Tenant.name == filt.tenant)
    return stmt


def _score(categories: list[dict[str, Any]], category: str | None) -> tuple[float, bool]:
    """The score a filter looks at, and whether the item matches the category filter."""
    if category is None:
        return max((float(c["score"]) for c in categories), default=0.0), True
    for c in categories:
        if c["id"] == category:
            return float(c["score"]), c.get("action") in ("review", "block")
    return 0.0, False


def _matches(filt: QueueFilter, categories: list[dict[str, Any]]) -> tuple[bool, float]:
    score, ok = _score(categories, filt.category)
    if filt.min_score is not None and score < filt.min_score:
        ok = False
    if filt.max_score is not None and score > filt.max_score:
        ok = False
    return ok, score


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    total: int
    offset: int
    limit: int

    @property
    def ids(self) -> list[str]:
        return [r.item_id for r in self.rows]


def waiting_ids(session: Session, user: User, filt: QueueFilter) -> list[tuple[str, float]]:
    """Every waiting item the filter keeps, oldest first, with its filter score."""
    stmt = _base(user, filt).with_only_columns(Item.id, Verdict.categories)
    out = []
    for item_id, categories in session.execute(stmt):
        ok, score = _matches(filt, categories or [])
        if ok:
            out.append((item_id, score))
    return out


def page(
    session: Session,
    user: User,
    filt: QueueFilter,
    *,
    limit: int = 50,
    offset: int = 0,
    now: datetime,
) -> QueuePage:
    waiting = waiting_ids(session, user, filt)
    chosen = dict(waiting[offset : offset + limit])
    if not chosen:
        return QueuePage([], len(waiting), offset, limit)
    claims = dict(
        session.execute(
            select(Claim.item_id, User.email)
            .join(User, User.id == Claim.user_id)
            .where(Claim.item_id.in_(chosen), Claim.expires_at > now)
        ).all()
    )
    rows = []
    stmt = _base(user, filt).where(Item.id.in_(chosen))
    for item, verdict, tenant in session.execute(stmt):
        cats = verdict.categories or []
        top = max(cats, key=lambda c: float(c["score"]), default=None)
        rows.append(
            QueueRow(
                item_id=item.id,
                external_id=item.external_id,
                tenant=tenant,
                created_at=aware(item.created_at),
                action=verdict.action.value,
                audit=verdict.audit,
                top_category=top["id"] if top else None,
                top_score=float(top["score"]) if top else 0.0,
                score=chosen[item.id],
                has_image=item.image_sha256 is not None,
                has_text=bool(item.text),
                text_preview=(item.text or "")[:140],
                claimed_by=claims.get(item.id),
                flagged=any(c.get("action") in ("review", "block") for c in cats),
                categories=cats,
            )
        )
    return QueuePage(rows, len(waiting), offset, limit)


def next_waiting(
    session: Session,
    user: User,
    filt: QueueFilter,
    *,
    now: datetime,
    after: str | None = None,
    before: str | None = None,
) -> str | None:
    """The next (or, with `before`, previous) waiting item that nobody else holds."""
    ids = [i for i, _ in waiting_ids(session, user, filt)]
    held = set(
        session.scalars(
            select(Claim.item_id).where(
                Claim.item_id.in_(ids), Claim.expires_at > now, Claim.user_id != user.id
            )
        )
    )
    free = [i for i in ids if i not in held or i in (after, before)]
    anchor = after or before
    if anchor in free:
        k = free.index(anchor)
        pick = free[k + 1 : k + 2] if after else free[max(k - 1, 0) : k] if k else []
        return pick[0] if pick else None
    candidates = [i for i in free if i not in (after, before)]
    if before:
        return candidates[-1] if candidates else None
    return candidates[0] if candidates else None


def counts(session: Session, user: User) -> dict[str, int]:
    """What the header shows: items waiting for this person (and escalations, for admins)."""
    out = {"waiting": len(waiting_ids(session, user, QueueFilter()))}
    if user.is_admin:
        out["escalated"] = len(waiting_ids(session, user, QueueFilter(escalated=True)))
    return out
