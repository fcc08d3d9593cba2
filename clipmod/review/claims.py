"""Claims: a lease on one item, so that two moderators never decide the same item at once.

Opening an item takes (or renews) its claim; the page renews it while it stays open, and a
claim nobody renews simply expires and the item is anyone's again, so a closed laptop never
locks an item for good. Taking a claim is race-free on both databases: a conditional UPDATE
renews our own claim or takes over an expired one, and otherwise an INSERT on the item's
primary key decides between two first-comers (the loser's savepoint rolls back and it is told
who won).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clipmod.errors import ClipmodError
from clipmod.models import Claim, Item, User, utcnow
from clipmod.review import audit
from clipmod.review.access import aware


class ClaimConflict(ClipmodError):
    code, status = "claimed_by_other", 409

    def __init__(self, holder: str, expires_at: datetime):
        until = aware(expires_at).strftime("%H:%M:%S UTC")
        super().__init__(f"{holder} is reviewing this item (claim held until {until})")
        self.holder = holder
        self.expires_at = aware(expires_at)


@dataclass(frozen=True)
class Held:
    """A live claim as pages show it."""

    holder: str
    user_id: int
    expires_at: datetime


def holder(session: Session, item_id: str, *, now: datetime | None = None) -> Held | None:
    """The live claim on an item, if any (expired claims count as none)."""
    now = now or utcnow()
    row = session.execute(
        select(Claim.user_id, User.email, Claim.expires_at)
        .join(User, User.id == Claim.user_id)
        .where(Claim.item_id == item_id, Claim.expires_at > now)
    ).first()
    return Held(row[1], row[0], aware(row[2])) if row else None


def claim(
    session: Session, item: Item, user: User, lease: timedelta, *, now: datetime | None = None
) -> bool:
    """Take or renew the claim; True when newly taken. Raises `ClaimConflict` if held by another."""
    now = now or utcnow()
    expires = now + lease
    renewed = session.execute(
        update(Claim)
        .where(Claim.item_id == item.id, Claim.user_id == user.id)
        .values(expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount:  # type: ignore[attr-defined]
        return False
    taken = session.execute(
        update(Claim)
        .where(Claim.item_id == item.id, Claim.expires_at <= now)
        .values(user_id=user.id, claimed_at=now, expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if not taken.rowcount:  # type: ignore[attr-defined]
        try:
            with session.begin_nested():
                session.add(
                    Claim(item_id=item.id, user_id=user.id, claimed_at=now, expires_at=expires)
                )
        except IntegrityError:
            held = holder(session, item.id, now=now)
            if held is None:  # it expired between the two statements: rare, and safe to retry
                return claim(session, item, user, lease, now=now)
            raise ClaimConflict(held.holder, held.expires_at) from None
    audit.record(session, "claim", user=user, item=item, detail={"expires_at": expires.isoformat()})
    return True


def require_not_held_by_other(
    session: Session, item: Item, user: User, *, now: datetime | None = None
) -> None:
    held = holder(session, item.id, now=now)
    if held is not None and held.user_id != user.id:
        raise ClaimConflict(held.holder, held.expires_at)


def release(session: Session, item_id: str, user: User) -> None:
    """Give the item back (decided, or the moderator moved on); only one's own claim."""
    session.execute(
        delete(Claim)
        .where(Claim.item_id == item_id, Claim.user_id == user.id)
        .execution_options(synchronize_session=False)
    )


def release_any(session: Session, item_id: str) -> None:
    """Drop whoever's claim: the item was decided from outside the dashboard (the platform)."""
    session.execute(
        delete(Claim).where(Claim.item_id == item_id).execution_options(synchronize_session=False)
    )
