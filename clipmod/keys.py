"""API keys: `cm_<prefix>_<secret>`, stored as sha256 of the whole key.

The prefix is public (it finds the row, shows up in logs and in `keys list`, and names the key
to revoke or rotate); the secret is 256 random bits and is shown once, at creation. A key
carries scopes, so a platform can give its upload pipeline a key that cannot delete.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from clipmod.errors import InvalidInput, NotFound
from clipmod.models import ApiKey, Tenant, as_utc, utcnow

# What a key may do on its own tenant's data. Admin keys (`is_admin`) may also manage
# policies, keys and tenants; they still need a scope for their own tenant's items.
SCOPES = (
    "items:read",
    "items:write",
    "items:delete",
    "deliveries:read",
    "deliveries:write",
    "tenant:manage",
)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: list[str] | None) -> list[str] | None:
    if scopes is None:
        return None
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"scopes: unknown {unknown[0]!r}; known: {', '.join(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


def allows(key: ApiKey, scope: str) -> bool:
    return key.scopes is None or scope in key.scopes


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def get_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant {name!r}", code="tenant_not_found")
    return tenant


def create_key(
    session: Session,
    tenant_name: str,
    label: str = "",
    *,
    admin: bool = False,
    scopes: list[str] | None = None,
) -> str:
    """Create a key for a tenant (creating the tenant if new); returns the only plaintext copy."""
    tenant = get_or_create_tenant(session, tenant_name)
    prefix = secrets.token_hex(6)
    key = f"cm_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(
            tenant_id=tenant.id,
            prefix=prefix,
            key_hash=_hash(key),
            label=label,
            is_admin=admin,
            scopes=check_scopes(scopes),
        )
    )
    session.flush()
    return key


def prefix_of(key: str) -> str:
    return key.split("_", 2)[1]


def _active(now: datetime) -> Any:
    return or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now)


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The key row (with its tenant) a presented key matches, or None; constant-time compare.

    Revocation is read from the database on every request, so a revoked key is refused by
    every API replica at once, with no cache to expire.
    """
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "cm":
        return None
    row = session.scalar(
        select(ApiKey)
        .options(selectinload(ApiKey.tenant))
        .where(ApiKey.prefix == parts[1], _active(utcnow()))
    )
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    return row


def find(session: Session, prefix: str, tenant_id: int | None = None) -> ApiKey:
    query = select(ApiKey).options(selectinload(ApiKey.tenant)).where(ApiKey.prefix == prefix)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    row = session.scalar(query)
    if row is None:
        raise NotFound(f"no key with prefix {prefix!r}", code="key_not_found")
    return row


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).options(selectinload(ApiKey.tenant)).order_by(ApiKey.id)
    if tenant is not None:
        query = query.join(Tenant).where(Tenant.name == tenant)
    return list(session.scalars(query))


def revoke(session: Session, prefix: str) -> ApiKey:
    """Refused from the next request on; revoking a revoked key changes nothing."""
    row = find(session, prefix)
    now = utcnow()
    if row.revoked_at is None or as_utc(row.revoked_at) > now:
        row.revoked_at = now
    session.flush()
    _announce(prefix)
    return row


@dataclass(frozen=True)
class Rotated:
    key: str
    old: ApiKey


def rotate(session: Session, prefix: str, grace_s: float = 0) -> Rotated:
    """A new key with the old one's tenant, label, admin flag and scopes; the old key stops
    working after `grace_s` seconds (0: at once), time enough to roll the new one out."""
    old = find(session, prefix)
    if old.revoked_at is not None and as_utc(old.revoked_at) <= utcnow():
        raise InvalidInput(f"key {prefix} is revoked; create a new one", code="key_revoked")
    key = create_key(session, old.tenant.name, old.label, admin=old.is_admin, scopes=old.scopes)
    old.revoked_at = utcnow() + timedelta(seconds=max(grace_s, 0))
    session.flush()
    _announce(prefix)
    return Rotated(key, old)


class RevocationWatcher(Protocol):
    def forget(self, prefix: str) -> None: ...


# Caches of authenticated keys in this process (the API's), told when a key is revoked or
# rotated so they stop honouring it at once. Weak: a cache lives exactly as long as its app.
_watchers: weakref.WeakSet[RevocationWatcher] = weakref.WeakSet()


def watch_revocations(watcher: RevocationWatcher) -> None:
    _watchers.add(watcher)


def _announce(prefix: str) -> None:
    for watcher in list(_watchers):
        watcher.forget(prefix)


def describe(row: ApiKey) -> dict[str, Any]:
    """A key as `keys list` and `GET /v1/keys` show it: never the secret, never its hash."""
    revoked = as_utc(row.revoked_at) if row.revoked_at is not None else None
    return {
        "prefix": row.prefix,
        "tenant": row.tenant.name,
        "label": row.label,
        "admin": row.is_admin,
        "scopes": list(row.scopes) if row.scopes is not None else list(SCOPES),
        "created_at": as_utc(row.created_at).isoformat(),
        "revoked_at": revoked.isoformat() if revoked else None,
        "active": revoked is None or revoked > utcnow(),
    }
