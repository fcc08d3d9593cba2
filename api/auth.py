"""Bearer-key authentication: every `/v1` request names its tenant through its key.

A key's scopes are checked per endpoint by `requires`, which also records the scope on the
view so the OpenAPI document can state it.

Looking a key up is a database round trip, and it used to be a third of an upload's cost. A
key's answer (tenant, admin, scopes, rate limit) is kept for `CLIPMOD_KEY_CACHE_S` seconds (5 by
default), keyed by the sha256 of the presented key: a hit costs one hash and one dict lookup.
Revoking or rotating a key drops it from every cache in the process at once
(`clipmod.keys.watch_revocations`); another API replica refuses it within the TTL. Unknown keys
are not cached, so a guessing client keeps paying its own round trips and cannot fill the cache.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from flask import g, request

from api.keycache import Identity
from api.services import services
from clipmod import keys
from clipmod.errors import ClipmodError, Unauthorized
from clipmod.models import Tenant, as_utc

View = TypeVar("View", bound=Callable[..., Any])


class TenantRef(NamedTuple):
    """The tenant a request acts for (`g.tenant`): its id scopes every query, its name goes in
    logs and audit entries. A plain value, not an ORM `Tenant`: building a mapped instance on
    every request cost more than the key cache's look-up, and it held nothing more."""

    id: int
    name: str


def set_tenant(tenant: Tenant) -> None:
    g.tenant = TenantRef(tenant.id, tenant.name)
    g.tenant_rate_limit = tenant.rate_limit


def _lookup(token: str) -> Identity | None:
    svc = services()
    digest = hashlib.sha256(token.encode()).hexdigest()
    identity = svc.key_cache.get(digest)
    if identity is not None:
        return identity
    with svc.sessions() as session:
        key = keys.authenticate(session, token)
        if key is None:
            return None
        identity = Identity(
            tenant_id=key.tenant.id,
            tenant_name=key.tenant.name,
            rate_limit=key.tenant.rate_limit,
            is_admin=key.is_admin,
            prefix=key.prefix,
            scopes=tuple(keys.SCOPES if key.scopes is None else key.scopes),
            revoked_at=as_utc(key.revoked_at) if key.revoked_at is not None else None,
        )
    svc.key_cache.put(digest, identity)
    return identity


def authenticate_request() -> None:
    """A `before_request` hook: sets `g.tenant` or refuses with 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    identity = _lookup(token.strip())
    if identity is None:
        raise Unauthorized("invalid or revoked API key", code="invalid_api_key")
    g.tenant = TenantRef(identity.tenant_id, identity.tenant_name)
    g.tenant_rate_limit = identity.rate_limit
    g.is_admin = identity.is_admin
    g.key_prefix = identity.prefix
    g.scopes = list(identity.scopes)


def require_admin() -> None:
    """A `before_request` hook for policy editing: an authenticated admin key, or 403."""
    authenticate_request()
    if not g.is_admin:
        raise ClipmodError("this endpoint needs an admin API key", code="forbidden", status=403)


def requires(scope: str) -> Callable[[View], View]:
    """The key must carry `scope` (after authentication, which the blueprint's hook did)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if scope not in g.scopes:
                raise ClipmodError(
                    f"this key lacks the {scope!r} scope", code="insufficient_scope", status=403
                )
            return view(*args, **kwargs)

        checked.required_scope = scope  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate
