"""Immutable policy versions, which of them is active where, and moderator decisions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from clipmod.actions import Action
from clipmod.models.base import Base, Timestamp, enum_by_value, utcnow


class ActivationMode(enum.StrEnum):
    ACTIVE = "active"
    SHADOW = "shadow"
    # Ends a scope's shadow run: the row names the version that was shadowing, for the history.
    # (Stored as a string in a VARCHAR(16) with no CHECK constraint, so it needed no migration.)
    SHADOW_STOP = "shadow_stop"


class PolicyVersion(Base):
    """A published policy. Rows are never updated: a verdict points at the exact text it used."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        UniqueConstraint("name", "content_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    yaml_text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    created_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class PolicyActivation(Base):
    """An append-only log: the newest row for a (tenant, mode) wins; tenant NULL means everyone.

    Rolling back is activating an older version, which keeps the history readable.
    """

    __tablename__ = "policy_activations"

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"))
    mode: Mapped[ActivationMode] = mapped_column(enum_by_value(ActivationMode))
    activated_by: Mapped[str] = mapped_column(String(128))
    activated_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow, index=True)


class ShadowVerdict(Base):
    """A draft version's verdict, recorded beside the real one and never acted on."""

    __tablename__ = "shadow_verdicts"
    __table_args__ = (UniqueConstraint("item_id", "policy_version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"))
    action: Mapped[Action] = mapped_column(enum_by_value(Action))
    categories: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    scored_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)


class DecisionAction(enum.StrEnum):
    ALLOW = "allow"
    REMOVE = "remove"
    ESCALATE = "escalate"  # not final: the item waits in the admins' queue


def _action_from_labels(context: Any) -> str:
    """Rows written without an action (older tools, label-only imports) read as their labels:
    any category judged a violation is a removal, otherwise the item was allowed."""
    labels = context.get_current_parameters().get("labels") or {}
    return DecisionAction.REMOVE.value if any(labels.values()) else DecisionAction.ALLOW.value


class Decision(Base):
    """A person's decision on an item, with labels `{category_id: bool}`: the ground truth for
    tuning (`policy suggest`, backtest precision/recall read `item_id`, `labels`, `decided_at`).

    Decisions are never edited: a later one (an admin's on an escalated item, say) points at the
    one it replaces through `supersedes_id`, which is unique, so an item's history is one chain
    and two people cannot both supersede the same decision. The verdict the decision answered
    is kept (`verdict_id`, `verdict_action`, `policy_version_id`) so disagreement with the
    policy can be measured later even after the policy changed.
    """

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    moderator: Mapped[str] = mapped_column(String(128))
    labels: Mapped[dict[str, bool]] = mapped_column(JSON)
    decided_at: Mapped[datetime] = mapped_column(Timestamp(), default=utcnow)
    action: Mapped[DecisionAction] = mapped_column(
        enum_by_value(DecisionAction), default=_action_from_labels
    )
    reason: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    source: Mapped[str] = mapped_column(String(16), default="dashboard")
    verdict_id: Mapped[int | None] = mapped_column(ForeignKey("verdicts.id"))
    verdict_action: Mapped[str | None] = mapped_column(String(16))
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), unique=True)
