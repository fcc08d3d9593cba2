"""Publishing, activating and resolving policy versions.

A version is immutable and identified by (name, version); publishing the same text again is a
no-op that returns the existing version. Which version applies to a tenant is the newest
activation for that tenant, else the newest activation for everyone. A shadow run ends with a
`SHADOW_STOP` row in its scope: the scope then has no shadow of its own (a tenant falls back to
everyone's, as it does for an active version), and the history keeps what ran when.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clipmod.errors import ClipmodError, InvalidInput, NotFound
from clipmod.models import ActivationMode, Bank, PolicyActivation, PolicyVersion, Tenant
from clipmod.policy.loader import PolicyError, content_hash, parse_policy, problem_at
from clipmod.policy.schema import Policy

# A scope's shadow run is ended by a stop row of this mode.
STOPPED_BY = {ActivationMode.SHADOW: ActivationMode.SHADOW_STOP}


class PublishConflict(ClipmodError):
    """Two publishes of one policy raced; the unique constraints let exactly one of them in."""

    code, status = "publish_conflict", 409


@dataclass(frozen=True)
class Published:
    version: PolicyVersion
    created: bool


def publish(
    session: Session, yaml_text: str, *, author: str, source: str = "<policy>"
) -> Published:
    """Validate and store a version (no-op if this exact text is already a version of it)."""
    return store(session, plan(session, yaml_text, author=author, source=source))


def store(session: Session, planned: Published) -> Published:
    """Insert a planned version. If another publish took its number (or its text) since it was
    planned, the unique constraints refuse it and nothing of it is stored."""
    if not planned.created:
        return planned
    session.add(planned.version)
    try:
        session.flush()
    except IntegrityError:
        label = planned.version.label
        raise PublishConflict(
            f"someone else published {planned.version.name!r} at the same moment ({label} or "
            "this exact text is taken now); nothing was published: reload the versions and "
            "publish again"
        ) from None
    return planned


def plan(session: Session, yaml_text: str, *, author: str, source: str = "<policy>") -> Published:
    """The version `publish` would store (not yet added), or the existing one with this text.

    Banks it references must exist: a worker would otherwise skip them silently at scoring.
    """
    policy = parse_policy(yaml_text, source=source)
    known = set(
        session.scalars(select(Bank.name).where(Bank.name.in_(b.name for b in policy.banks)))
    )
    missing = [
        problem_at(
            yaml_text,
            source,
            ("banks", i, "name"),
            f"no bank named {ref.name!r}: create it first (`clipmod banks create`)",
        )
        for i, ref in enumerate(policy.banks)
        if ref.name not in known
    ]
    if missing:
        raise PolicyError(missing)
    digest = content_hash(yaml_text)
    existing = session.scalar(
        select(PolicyVersion).where(
            PolicyVersion.name == policy.name, PolicyVersion.content_hash == digest
        )
    )
    if existing is not None:
        return Published(existing, created=False)
    latest = session.scalar(
        select(PolicyVersion)
        .where(PolicyVersion.name == policy.name)
        .order_by(PolicyVersion.version.desc())
        .limit(1)
    )
    version = PolicyVersion(
        name=policy.name,
        version=(latest.version + 1) if latest else 1,
        content_hash=digest,
        yaml_text=yaml_text,
        author=author,
        parent_id=latest.id if latest else None,
    )
    return Published(version, created=True)


def activate(
    session: Session,
    version: PolicyVersion,
    *,
    by: str,
    tenants: list[Tenant] | None = None,
    mode: ActivationMode = ActivationMode.ACTIVE,
) -> None:
    """Make `version` the active (or shadow) one for the named tenants, or for everyone."""
    scopes: list[Tenant | None] = list(tenants) if tenants else [None]
    for tenant in scopes:
        session.add(
            PolicyActivation(
                policy_version_id=version.id,
                tenant_id=tenant.id if tenant else None,
                mode=mode,
                activated_by=by,
            )
        )
    session.flush()


def own_activation(
    session: Session, tenant_id: int | None, mode: ActivationMode
) -> PolicyActivation | None:
    """The newest row of one scope (a tenant, or None: everyone) for `mode` or its stop."""
    cond = (
        PolicyActivation.tenant_id.is_(None)
        if tenant_id is None
        else PolicyActivation.tenant_id == tenant_id
    )
    modes = [mode, *([STOPPED_BY[mode]] if mode in STOPPED_BY else [])]
    return session.scalar(
        select(PolicyActivation)
        .where(cond, PolicyActivation.mode.in_(modes))
        .order_by(PolicyActivation.activated_at.desc(), PolicyActivation.id.desc())
        .limit(1)
    )


def resolve(
    session: Session, tenant_id: int | None, mode: ActivationMode = ActivationMode.ACTIVE
) -> PolicyVersion | None:
    """The version that applies to a tenant now: its own activation first, then the global one.

    A scope whose newest row is a stop has none of its own, and a tenant falls back to the
    global scope as if it had never had one.
    """
    for scope in ([tenant_id] if tenant_id is not None else []) + [None]:
        row = own_activation(session, scope, mode)
        if row is not None and row.mode == mode:
            return session.get(PolicyVersion, row.policy_version_id)
    return None


def activation_stamp(session: Session) -> tuple[int, int]:
    """Changes whenever any activation is added: workers poll this to hot-reload cheaply."""
    count, newest = session.execute(
        select(func.count(PolicyActivation.id), func.max(PolicyActivation.id))
    ).one()
    return int(count or 0), int(newest or 0)


def ensure_seeded(session: Session, yaml_text: str, *, source: str) -> PolicyVersion:
    """On a fresh database, publish and activate the configured policy file for everyone.

    Once any version is active this does nothing: from then on `clipmod policy publish` decides,
    and a restart never silently overrides what an editor published.
    """
    active = resolve(session, None)
    if active is not None:
        return active
    published = publish(session, yaml_text, author="system:seed", source=source)
    activate(session, published.version, by="system:seed")
    return published.version


def get_version(session: Session, ref: str) -> PolicyVersion:
    """Look a version up by `name@N` or by numeric id; anything else is not found."""
    if not re.fullmatch(r"[^@]+@\d+|\d+", ref):
        raise NotFound(
            f"policy version {ref!r} not found: use name@N or an id",
            code="policy_version_not_found",
        )
    if "@" in ref:
        name, _, num = ref.partition("@")
        row = session.scalar(
            select(PolicyVersion).where(
                PolicyVersion.name == name, PolicyVersion.version == int(num)
            )
        )
    else:
        row = session.get(PolicyVersion, int(ref)) if ref.isdigit() else None
    if row is None:
        raise NotFound(f"policy version {ref!r} not found", code="policy_version_not_found")
    return row


def tenants_by_name(session: Session, names: list[str]) -> list[Tenant]:
    rows = []
    for name in names:
        row = session.scalar(select(Tenant).where(Tenant.name == name))
        if row is None:
            raise InvalidInput(f"no tenant named {name!r}", code="unknown_tenant")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Activated:
    mode: ActivationMode
    tenants: list[str]


def activate_by_name(
    session: Session, version: PolicyVersion, *, by: str, tenant_names: list[str], shadow: bool
) -> Activated:
    """`activate` for the front ends (CLI, API), which name tenants rather than hold rows."""
    mode = ActivationMode.SHADOW if shadow else ActivationMode.ACTIVE
    tenants = tenants_by_name(session, tenant_names)
    activate(session, version, by=by, tenants=tenants, mode=mode)
    return Activated(mode, [t.name for t in tenants])


def stop_shadow(session: Session, *, by: str, tenants: list[Tenant] | None = None) -> Activated:
    """End the shadow run of each named scope (or everyone's), all or nothing.

    A scope without a shadow run of its own is refused with a message saying so (and whose run
    it follows instead), before any row is written.
    """
    scopes: list[Tenant | None] = list(tenants) if tenants else [None]
    running = []
    for tenant in scopes:
        row = own_activation(session, tenant.id if tenant else None, ActivationMode.SHADOW)
        if row is None or row.mode != ActivationMode.SHADOW:
            who = f"tenant {tenant.name!r}" if tenant else "everyone"
            inherited = resolve(session, tenant.id, ActivationMode.SHADOW) if tenant else None
            also = f"; it follows everyone's ({inherited.label})" if inherited else ""
            raise ClipmodError(
                f"no shadow run of its own for {who}{also}: nothing was stopped",
                code="no_shadow_run",
                status=409,
            )
        running.append((tenant, row.policy_version_id))
    for tenant, version_id in running:
        session.add(
            PolicyActivation(
                policy_version_id=version_id,
                tenant_id=tenant.id if tenant else None,
                mode=ActivationMode.SHADOW_STOP,
                activated_by=by,
            )
        )
    session.flush()
    return Activated(ActivationMode.SHADOW_STOP, [t.name for t in scopes if t is not None])


def activations_by_version(session: Session) -> dict[int, list[dict[str, Any]]]:
    """Where each version is in force now: `{version_id: [{"tenant", "mode"}]}`.

    The newest activation per (tenant, mode) wins, as in `resolve`; a stop row ends its scope's
    shadow run.
    """
    names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    stops = {stop: mode for mode, stop in STOPPED_BY.items()}
    latest: dict[tuple[int | None, ActivationMode], int] = {}
    for row in session.scalars(
        select(PolicyActivation).order_by(PolicyActivation.activated_at, PolicyActivation.id)
    ):
        if row.mode in stops:
            latest.pop((row.tenant_id, stops[row.mode]), None)
        else:
            latest[(row.tenant_id, row.mode)] = row.policy_version_id
    out: dict[int, list[dict[str, Any]]] = {}
    for (tenant_id, mode), version_id in sorted(
        latest.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or 0, kv[0][1])
    ):
        tenant = names.get(tenant_id) if tenant_id is not None else None
        out.setdefault(version_id, []).append({"tenant": tenant, "mode": mode.value})
    return out


def all_versions(session: Session) -> list[PolicyVersion]:
    """Every version, grouped by policy name, newest first."""
    return list(
        session.scalars(
            select(PolicyVersion).order_by(PolicyVersion.name, PolicyVersion.version.desc())
        )
    )


def version_json(
    version: PolicyVersion, where: list[dict[str, Any]], *, yaml_text: bool = False
) -> dict[str, Any]:
    """The one JSON shape of a version, shared by `clipmod policy … --json` and the API."""
    body: dict[str, Any] = {
        "id": version.id,
        "name": version.name,
        "version": version.version,
        "label": version.label,
        "content_hash": version.content_hash,
        "author": version.author,
        "parent_id": version.parent_id,
        "created_at": version.created_at.isoformat(),
        "in_force": where,
    }
    if yaml_text:
        body["yaml"] = version.yaml_text
    return body


def load(version: PolicyVersion) -> Policy:
    return _parsed(version.yaml_text, version.label)


@functools.lru_cache(maxsize=64)
def _parsed(yaml_text: str, label: str) -> Policy:
    """Versions are immutable and a `Policy` is frozen, so each text is parsed once per process
    (a demo-sized policy takes ~0.1 s to parse: a tenth of a million-item backtest)."""
    return parse_policy(yaml_text, source=label)
