"""Policy drafts: what an admin is editing in the browser, kept server-side so it survives a
reload, a crash of the tab or a second device. A draft is private to its author and becomes a
policy only by being published (a new immutable `PolicyVersion`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clipmod.models.base import Base, Timestamp, utcnow


class PolicyDraft(Base):
    __tablename__ = "policy_drafts"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The policy name the text had when last saved (a draft need not parse), for listing.
    name: Mapped[str] = mapped_column(String(128))
    base_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    yaml_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
