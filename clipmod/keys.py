"""API keys: `cm_<prefix>_<secret>`, stored as sha256 of the whole key.

The prefix is public (it finds the row and shows up in logs); the secret is 256 random bits and
is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from clipmod.models import ApiKey, Tenant


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant_name: str, label: str = "", *, admin: bool = False) -> str:
    """Create a key for a tenant (creating the tenant if new); returns the only plaintext copy."""
    tenant = get_or_create_tenant(session, tenant_name)
    prefix = secrets.token_hex(6)
    key = f"cm_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(
        ApiKey(tenant_id=tenant.id, prefix=prefix, key_hash=_hash(key), label=label, is_admin=admin)
    )
    session.flush()
    return key


def authenticate(session: Session, key: str) -> ApiKey | None:
    """The key row (with its tenant) a presented key matches, or None; constant-time compare."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "cm":
        return None
    row = session.scalar(
        select(ApiKey).where(ApiKey.prefix == parts[1], ApiKey.revoked_at.is_(None))
    )
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    return row
