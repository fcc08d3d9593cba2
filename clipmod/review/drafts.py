"""Admins' policy drafts: start one from a version (or blank), save as they type, list, delete.

A draft belongs to one person: another's draft is "not found", as another tenant's item is.
A draft may be any text (it is being edited, so it is often invalid), but never over the
policy size limit: the same limit, with the same message, as everywhere else.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.errors import NotFound
from clipmod.models import PolicyDraft, PolicyVersion, User, utcnow
from clipmod.policy.loader import check_size

NAME = re.compile(r"^name:\s*['\"]?([A-Za-z0-9][A-Za-z0-9_.-]{0,127})", re.MULTILINE)
MAX_DRAFTS = 50  # per person: drafts are work in progress, not an archive


def blank_policy(model: str) -> str:
    """The text of a new draft: the smallest valid policy, written for the workers' model."""
    return (
        "name: my-policy\n"
        "description: What this policy is for.\n"
        f"model: {model}\n"
        "categories:\n"
        "- id: example\n"
        "  title: Example\n"
        "  mode: similarity\n"
        "  prompts:\n"
        "  - a photo of something to flag\n"
        "  review_at: 0.25\n"
        "  block_at: 0.3\n"
    )


def _name_of(text: str) -> str:
    found = NAME.search(text)
    return found.group(1) if found else "(unnamed)"


def create(
    session: Session, user: User, text: str, *, base: PolicyVersion | None = None
) -> PolicyDraft:
    check_size(text, "draft")
    mine = list(
        session.scalars(
            select(PolicyDraft).where(PolicyDraft.user_id == user.id).order_by(PolicyDraft.id)
        )
    )
    for old in mine[: max(0, len(mine) - MAX_DRAFTS + 1)]:
        session.delete(old)  # the oldest go first: nobody pages through fifty drafts
    draft = PolicyDraft(
        user_id=user.id,
        name=_name_of(text),
        base_version_id=base.id if base else None,
        yaml_text=text,
    )
    session.add(draft)
    session.flush()
    return draft


def get(session: Session, user: User, draft_id: int) -> PolicyDraft:
    draft = session.get(PolicyDraft, draft_id)
    if draft is None or draft.user_id != user.id:
        raise NotFound(f"draft {draft_id} not found", code="draft_not_found")
    return draft


def save(session: Session, user: User, draft_id: int, text: str) -> PolicyDraft:
    check_size(text, "draft")
    draft = get(session, user, draft_id)
    if draft.yaml_text != text:
        draft.yaml_text = text
        draft.name = _name_of(text)
        draft.updated_at = utcnow()
    return draft


def mine(session: Session, user: User) -> list[PolicyDraft]:
    """Newest first."""
    return list(
        session.scalars(
            select(PolicyDraft)
            .where(PolicyDraft.user_id == user.id)
            .order_by(PolicyDraft.updated_at.desc(), PolicyDraft.id.desc())
        )
    )


def delete(session: Session, user: User, draft_id: int) -> None:
    session.delete(get(session, user, draft_id))
