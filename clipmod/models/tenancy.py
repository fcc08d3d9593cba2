"""Tenants and their API keys.

Keys are random 256-bit tokens, so a fast hash (sha256) is enough to store them: unlike
passwords they cannot be guessed from a dictionary. The short public prefix lets us find the row
without scanning, and lets an operator recognise a key in logs without seeing the secret.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clipmod.models.base import Base, Timestamp, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    # Where verdicts are POSTed (signed; `clipmod.deliveries`); NULL sends none.
    callback_url: Mapped[str | None] = mapped_column(Text)
    # Flask-Limiter notation ("100/minute;2000/hour"); NULL uses CLIPMOD_RATE_LIMIT.
    rate_limit: Mapped[str | None] = mapped_column(String(128))

    keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128), default="")
    # Admin keys may also edit policies (publish, activate, backtest); platform keys only upload.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    # In the past: refused. In the future: a rotated key's grace period (`keys rotate --grace`).
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp())
    # `clipmod.keys.SCOPES` this key may use; NULL (keys from before scopes) means all of them.
    scopes: Mapped[list[str] | None] = mapped_column(JSON)

    tenant: Mapped[Tenant] = relationship(back_populates="keys")
