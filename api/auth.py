"""Bearer-key authentication: every `/v1` request names its tenant through its key."""

from __future__ import annotations

from flask import g, request

from api.services import services
from clipmod import keys
from clipmod.errors import ClipmodError, Unauthorized
from clipmod.models import Tenant


def authenticate_request() -> None:
    """A `before_request` hook: sets `g.tenant` or refuses with 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    with services().sessions() as session:
        key = keys.authenticate(session, token.strip())
        if key is None:
            raise Unauthorized("invalid or revoked API key", code="invalid_api_key")
        g.tenant = Tenant(id=key.tenant.id, name=key.tenant.name)
        g.is_admin = key.is_admin


def require_admin() -> None:
    """A `before_request` hook for policy editing: an authenticated admin key, or 403."""
    authenticate_request()
    if not g.is_admin:
        raise ClipmodError("this endpoint needs an admin API key", code="forbidden", status=403)
