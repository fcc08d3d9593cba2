"""Embedding banks: named sets of known images, versioned like policies.

A bank belongs to one model revision because a cosine between embeddings of two different
models means nothing. Entries are never rewritten: an entry records the version that added it
and, once removed, the version that removed it, so the entries of any past version are a
range query (`added_in <= v < removed_in`) and a verdict's `bank@version` stays explainable
without copying the whole set per version.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clipmod.actions import Action
from clipmod.models.base import Base, Timestamp, enum_by_value, utcnow


class Bank(Base):
    """`kind` is the action a match stands for: `block`, `review`, or `allow` (which suppresses
    prompt-based flags)."""

    __tablename__ = "banks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[Action] = mapped_column(enum_by_value(Action))
    model_revision: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)


class BankVersion(Base):
    """One change to a bank (entries added and/or removed). Rows are never updated."""

    __tablename__ = "bank_versions"
    __table_args__ = (UniqueConstraint("bank_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int] = mapped_column(Integer)  # entries in force at this version
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)


class BankEntry(Base):
    """One known image: its L2-normalised embedding (float16, `clipmod.embeddings`) and where it
    came from (a stored item, or an uploaded image kept in the blob store by sha256, so the
    entry can be re-embedded for another model later)."""

    __tablename__ = "bank_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id"), index=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(16))  # "item" | "upload"
    item_id: Mapped[str | None] = mapped_column(ForeignKey("items.id"), index=True)
    # Indexed: deletion and the blob sweep ask whether an entry still names a blob.
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(255), default="")
    added_in: Mapped[int] = mapped_column(Integer)
    removed_in: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
