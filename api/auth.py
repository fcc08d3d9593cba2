"""Bearer-key authentication: every `/v1` request names its tenant through its key.

Looking a key up is a database round trip, and it used to be a third of an upload's cost. A
key's answer (tenant, admin or not) is kept for `CLIPMOD_KEY_CACHE_S` seconds (5 by default),
keyed by the sha256 of the presented key: a hit costs one hash and one dict lookup. The TTL is
the bound on how long a revoked key keeps working on a replica. Unknown keys are not cached, so
a guessing client keeps paying its own round trips and cannot fill the cache.
"""

from __future__ import annotations

import hashlib

from flask import g, request

from api.keycache import Identity
from api.services import services
from clipmod import keys
from clipmod.errors import ClipmodError, Unauthorized
from clipmod.models import Tenant


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
        identity = Identity(key.tenant.id, key.tenant.name, key.is_admin)
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
    g.tenant = Tenant(id=identity.tenant_id, name=identity.tenant_name)
    g.is_admin = identity.is_admin


def require_admin() -> None:
    """A `before_request` hook for policy editing: an authenticated admin key, or 403."""
    authenticate_request()
    if not g.is_admin:
        raise ClipmodError("this endpoint needs an admin API key", code="forbidden", status=403)
