"""People who review items, the claims they hold, and the append-only audit log.

Dashboard users are people, not API keys: they sign in with a password (argon2 hash), have a
role, and see only the tenants they are assigned to (admins see all). A claim is a lease on
one item so that two moderators never decide the same item at once; the primary key on
`item_id` is what makes taking a claim atomic. Audit events are never updated or deleted: the
mapper refuses both, so a bug cannot quietly rewrite history.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clipmod.models.base import Base, Timestamp, enum_by_value, utcnow
from clipmod.models.tenancy import Tenant


class Role(enum.StrEnum):
    MODERATOR = "moderator"
    ADMIN = "admin"


user_tenants = Table(
    "user_tenants",
    Base.metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("tenant_id", ForeignKey("tenants.id"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(enum_by_value(Role))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(Timestamp())
    # Part of every session's identity: bumping it (logout, password change) ends them all,
    # although the session itself lives in a signed cookie we cannot recall.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(Timestamp())

    tenants: Mapped[list[Tenant]] = relationship(secondary=user_tenants, lazy="selectin")

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class Claim(Base):
    """A lease on one item; an expired row is free for anyone to take over."""

    __tablename__ = "claims"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    claimed_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(Timestamp(), index=True)

    user: Mapped[User] = relationship(lazy="joined")


class AuditEvent(Base):
    """Who did what, to which item, when. `actor` keeps the email even for failed logins."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(32), index=True)
    item_id: Mapped[str | None] = mapped_column(ForeignKey("items.id"), index=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _append_only(_mapper: Any, _conn: Any, target: AuditEvent) -> None:
    raise PermissionError(f"audit event {target.id} is append-only")
