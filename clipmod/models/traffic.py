"""The traffic log: a monotonic key for every stored embedding, for the analytics store.

`item_embeddings` is keyed by (item, revision), which says nothing about what is new. A trigger
(migration 0006) appends a row here in the same transaction as every embedding insert, whatever
code path inserts it, so `clipmod.traffic` can copy new embeddings into its segment files by
reading `seq > watermark` instead of re-reading the table. Deleting (or rewriting) an embedding
logs a row with `deleted` set (migration 0008), which the store turns into a tombstone.
"""

from __future__ import annotations

from sqlalchemy import Boolean, String, false
from sqlalchemy.orm import Mapped, mapped_column

from clipmod.models.base import Base


class TrafficLog(Base):
    __tablename__ = "traffic_log"
    # SQLite: AUTOINCREMENT never reuses a number, so a seq the store has passed stays passed.
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str] = mapped_column(String(32))
    model_revision: Mapped[str] = mapped_column(String(64))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
