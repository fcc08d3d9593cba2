"""Platform integration: signing secrets, seen webhook signatures, callback deliveries."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clipmod.models.base import Base, Timestamp, enum_by_value, new_id, utcnow


class SecretPurpose(enum.StrEnum):
    WEBHOOK = "webhook"  # verifies what the platform sends us
    CALLBACK = "callback"  # signs what we send the platform


class SigningSecret(Base):
    """An HMAC key shared with a platform. HMAC needs the key itself, so it is stored encrypted
    (`clipmod.secretbox`), never hashed; two may be active per purpose, for rotation."""

    __tablename__ = "signing_secrets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    purpose: Mapped[SecretPurpose] = mapped_column(enum_by_value(SecretPurpose))
    # The first characters of the secret: enough to recognise it, useless to an attacker.
    hint: Mapped[str] = mapped_column(String(16))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    # In the future: still valid until then (rotation); in the past: revoked.
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp())


class SeenSignature(Base):
    """Signatures accepted inside the replay window. A row, not process memory, so every API
    replica refuses a replay that another one accepted; rows older than the window are purged."""

    __tablename__ = "seen_signatures"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, index=True)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # out of retries; `redeliver` puts it back


class Delivery(Base):
    """One callback to a platform and its retry state: the database, not the broker, holds the
    schedule, so retries survive restarts and no countdown outlives Redis' visibility timeout."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    item_id: Mapped[str | None] = mapped_column(ForeignKey("items.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[DeliveryStatus] = mapped_column(
        enum_by_value(DeliveryStatus), default=DeliveryStatus.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, index=True)
    # Who may attempt it now: a dispatcher sets a fresh token and a lease, the task carries the
    # token, so a duplicate message or a second dispatcher never sends it twice.
    lock_token: Mapped[str | None] = mapped_column(String(32))
    locked_until: Mapped[datetime | None] = mapped_column(Timestamp())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Retries stop `CLIPMOD_DELIVERY_RETRY_FOR_S` after this; a redelivery restarts it.
    window_started_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp())


class DeliveryAttempt(Base):
    """Each try, for the tenant's delivery log."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
