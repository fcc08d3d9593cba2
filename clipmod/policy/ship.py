"""Shipping a policy: publish, activate, shadow, stop a shadow run, roll back, each audited.

The editor, the CLI and the API all change what is in force through these functions, so the
dashboard's audit log answers "who put this version in force, and when" whichever way it was
done. Each audit row is written in the same transaction as the change it records: a refused or
rolled-back change leaves neither a version nor a row behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from clipmod.models import ActivationMode, PolicyVersion, User
from clipmod.policy import versions
from clipmod.review import audit


@dataclass(frozen=True)
class Actor:
    """Who acts: a dashboard user (`user` set, `name` their email) or `cli:…` / `api:…`."""

    name: str
    user: User | None = None

    @classmethod
    def of(cls, user: User) -> Actor:
        return cls(user.email, user)


def _record(session: Session, action: str, actor: Actor, **detail: object) -> None:
    audit.record(session, action, user=actor.user, actor=actor.name, detail=dict(detail))


def publish(
    session: Session, yaml_text: str, *, actor: Actor, source: str = "<policy>"
) -> versions.Published:
    """Store a new version (a no-op, and no audit row, when the text is already a version)."""
    published = versions.publish(session, yaml_text, author=actor.name, source=source)
    if published.created:
        v = published.version
        parent = session.get(PolicyVersion, v.parent_id) if v.parent_id else None
        _record(
            session,
            "policy_publish",
            actor,
            version=v.label,
            version_id=v.id,
            parent=parent.label if parent else None,
        )
    return published


def is_rollback(session: Session, version: PolicyVersion, tenant_ids: Sequence[int | None]) -> bool:
    """True when some scope would go back to an older version of the policy it runs now."""
    for tenant_id in tenant_ids:
        current = versions.resolve(session, tenant_id)
        if current and current.name == version.name and version.version < current.version:
            return True
    return False


def activate(
    session: Session,
    version: PolicyVersion,
    *,
    actor: Actor,
    tenant_names: list[str],
    shadow: bool = False,
) -> versions.Activated:
    """Put `version` in force (or in shadow) for the named tenants or everyone.

    Activating an older version than a scope runs is a rollback, and is recorded as one.
    """
    tenants = versions.tenants_by_name(session, tenant_names)
    scopes: list[int | None] = [t.id for t in tenants] or [None]
    if shadow:
        action = "policy_shadow"
    else:
        action = "policy_rollback" if is_rollback(session, version, scopes) else "policy_activate"
    done = versions.activate_by_name(
        session, version, by=actor.name, tenant_names=tenant_names, shadow=shadow
    )
    _record(
        session,
        action,
        actor,
        version=version.label,
        version_id=version.id,
        tenants=done.tenants or "everyone",
    )
    return done


def stop_shadow(session: Session, *, actor: Actor, tenant_names: list[str]) -> list[str]:
    """End the shadow runs of the named tenants (or everyone's); returns the versions stopped."""
    tenants = versions.tenants_by_name(session, tenant_names)
    scopes: list[int | None] = [t.id for t in tenants] or [None]
    stopped = [versions.resolve(session, s, ActivationMode.SHADOW) for s in scopes]
    versions.stop_shadow(session, by=actor.name, tenants=tenants)
    labels = [v.label for v in stopped if v is not None]
    _record(
        session,
        "policy_shadow_stop",
        actor,
        versions=labels,
        tenants=[t.name for t in tenants] or "everyone",
    )
    return labels
