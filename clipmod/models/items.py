"""Uploaded items, their verdicts and their embeddings."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clipmod.actions import Action
from clipmod.models.base import Base, Timestamp, enum_by_value, new_id, utcnow

if TYPE_CHECKING:
    from clipmod.models.policies import PolicyVersion


class ItemStatus(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    SCORED = "scored"
    FAILED = "failed"
    # A tombstone: content, blob and embeddings are gone; the row says the item existed.
    DELETED = "deleted"


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[ItemStatus] = mapped_column(
        enum_by_value(ItemStatus), default=ItemStatus.QUEUED, index=True
    )
    # Indexed: deleting an item asks whether any other item still uses the same blob.
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    image_format: Mapped[str | None] = mapped_column(String(16))
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    # An item may name its image by URL; a worker fetches it (`clipmod.fetch`) into the blob
    # store and fills `image_sha256` before decoding.
    image_url: Mapped[str | None] = mapped_column(Text)
    # `metadata` is reserved on declarative classes; the column keeps the API's name.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # sha256 of text + image digest + metadata (`api.validation.content_hash`): a reused
    # external_id with other content is a conflict, not a replay. NULL on rows from before 0002.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker scoring this item and until when its claim holds (renewed while it works): a
    # dead worker's items come back when the lease runs out, not after a fixed age. NULL when
    # nobody holds the item (a NULL lease on a `processing` row counts as expired).
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(Timestamp())
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(Timestamp())

    verdict: Mapped[Verdict | None] = relationship(back_populates="item", uselist=False)


class Verdict(Base):
    """The verdict the platform acts on: one per item, written once, idempotently."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), unique=True)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"), index=True)
    action: Mapped[Action] = mapped_column(enum_by_value(Action), index=True)
    # [{"id", "score", "review_at", "block_at", "action", "top_prompt", "source"}]
    categories: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    audit: Mapped[bool] = mapped_column(default=False)
    model_name: Mapped[str] = mapped_column(String(255))
    model_revision: Mapped[str] = mapped_column(String(64))
    # {"bank", "version", "kind", "entry", "similarity", "threshold"} when a bank matched.
    bank_match: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    scored_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)

    item: Mapped[Item] = relationship(back_populates="verdict")
    policy_version: Mapped[PolicyVersion] = relationship()


class ItemEmbedding(Base):
    """L2-normalised embeddings as little-endian float16: backtests re-score without the model.

    `text` holds one row per 77-token window (`text_windows` rows); the item's text score is the
    maximum over windows, so all of them are kept.
    """

    __tablename__ = "item_embeddings"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    model_revision: Mapped[str] = mapped_column(String(64), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    image: Mapped[bytes | None] = mapped_column(LargeBinary)
    text: Mapped[bytes | None] = mapped_column(LargeBinary)
    text_windows: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
