"""A tenant's integration settings: signing secrets, callback URL, rate limit.

Shared by the CLI (`clipmod tenants …`) and the API (`/v1/tenant`, `/v1/tenants/<name>`), so
both enforce the same rules: at most two active secrets per purpose (the old and the new one
while rotating), a callback URL that passes the SSRF rules, a limit Flask-Limiter can parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from clipmod import netguard, signing
from clipmod.errors import ClipmodError, InvalidInput, NotFound
from clipmod.models import SecretPurpose, SigningSecret, Tenant, as_utc, utcnow
from clipmod.secretbox import SecretBox

MAX_ACTIVE_SECRETS = 2
HINT_CHARS = 10  # "whsec_" and four random characters


@dataclass(frozen=True)
class NewSecret:
    row: SigningSecret
    secret: str  # the only plaintext copy that ever leaves this module


def _active(tenant_id: int, purpose: SecretPurpose) -> Any:
    return (
        select(SigningSecret)
        .where(
            SigningSecret.tenant_id == tenant_id,
            SigningSecret.purpose == purpose,
            or_(SigningSecret.expires_at.is_(None), SigningSecret.expires_at > utcnow()),
        )
        .order_by(SigningSecret.created_at.desc())
    )


def active_secrets(
    session: Session, box: SecretBox, tenant_id: int, purpose: SecretPurpose
) -> list[str]:
    """Plaintexts of the active secrets, newest first, for signing or verifying right now."""
    return [box.decrypt(row.ciphertext) for row in session.scalars(_active(tenant_id, purpose))]


def list_secrets(session: Session, tenant_id: int) -> list[SigningSecret]:
    query = select(SigningSecret).where(SigningSecret.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(SigningSecret.created_at)))


def create_secret(
    session: Session, box: SecretBox, tenant_id: int, purpose: SecretPurpose
) -> NewSecret:
    active = list(session.scalars(_active(tenant_id, purpose)))
    if len(active) >= MAX_ACTIVE_SECRETS:
        raise ClipmodError(
            f"tenant already has {MAX_ACTIVE_SECRETS} active {purpose} secrets; revoke one "
            "(or rotate, which schedules the older one's end)",
            code="too_many_secrets",
            status=409,
        )
    secret = signing.new_secret()
    row = SigningSecret(
        tenant_id=tenant_id,
        purpose=purpose,
        hint=secret[:HINT_CHARS],
        ciphertext=box.encrypt(secret),
    )
    session.add(row)
    session.flush()
    return NewSecret(row, secret)


def _find_secret(session: Session, tenant_id: int, secret_id: str) -> SigningSecret:
    row = session.get(SigningSecret, secret_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"no signing secret {secret_id!r}", code="secret_not_found")
    return row


def revoke_secret(session: Session, tenant_id: int, secret_id: str) -> SigningSecret:
    row = _find_secret(session, tenant_id, secret_id)
    now = utcnow()
    if row.expires_at is None or as_utc(row.expires_at) > now:
        row.expires_at = now
    session.flush()
    return row


def rotate_secret(
    session: Session, box: SecretBox, tenant_id: int, purpose: SecretPurpose, grace_s: float
) -> NewSecret:
    """A new secret; every older active one of that purpose ends after `grace_s` seconds.

    During the grace both verify (inbound) and both sign (outbound: one `v1` each), so neither
    side has to switch at the same instant.
    """
    ends = utcnow() + timedelta(seconds=max(grace_s, 0))
    active = list(session.scalars(_active(tenant_id, purpose)))
    for row in active:
        if row.expires_at is None or as_utc(row.expires_at) > ends:
            row.expires_at = ends
    session.flush()
    # The older ones may still count as active during the grace: keep only the newest.
    for row in active[MAX_ACTIVE_SECRETS - 1 :]:
        row.expires_at = utcnow()
    session.flush()
    return create_secret(session, box, tenant_id, purpose)


def secret_json(row: SigningSecret) -> dict[str, Any]:
    expires = as_utc(row.expires_at) if row.expires_at is not None else None
    return {
        "id": row.id,
        "purpose": str(row.purpose),
        "hint": row.hint + "…",
        "created_at": as_utc(row.created_at).isoformat(),
        "expires_at": expires.isoformat() if expires else None,
        "active": expires is None or expires > utcnow(),
    }


def check_callback_url(url: str, policy: netguard.AddressPolicy) -> str:
    """Refuse a callback URL that visibly points inside (scheme, credentials, an internal IP
    literal). Names are not resolved here: every delivery resolves and checks them (DNS can
    change after this), and the API process then never waits on DNS for a tenant."""
    target = netguard.parse_url(url)
    literal = netguard.ip_literal(target.host)
    if literal is not None:
        policy.check(literal)
    return url.strip()


def set_callback(
    session: Session,
    box: SecretBox,
    tenant: Tenant,
    url: str | None,
    policy: netguard.AddressPolicy,
) -> NewSecret | None:
    """Set (or clear, with None) the callback URL; creates the first callback secret if the
    tenant has none, and returns it: a callback that cannot be signed is never sent."""
    tenant.callback_url = check_callback_url(url, policy) if url else None
    session.flush()
    if url and not list(session.scalars(_active(tenant.id, SecretPurpose.CALLBACK))):
        return create_secret(session, box, tenant.id, SecretPurpose.CALLBACK)
    return None


def check_rate_limit(value: str) -> str:
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError("empty")
    except ValueError:
        raise InvalidInput(
            f"rate_limit: {value!r} is not a limit such as '100/minute' or '10/second;500/hour'"
        ) from None
    return value


def set_rate_limit(session: Session, tenant: Tenant, value: str | None) -> None:
    tenant.rate_limit = check_rate_limit(value) if value else None
    session.flush()


def tenant_json(session: Session, tenant: Tenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "callback_url": tenant.callback_url,
        "rate_limit": tenant.rate_limit,
        "signing_secrets": [secret_json(s) for s in list_secrets(session, tenant.id)],
    }
