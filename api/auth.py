"""Bearer-key authentication: every `/v1` request names its tenant through its key.

A key's scopes are checked per endpoint by `requires`, which also records the scope on the
view so the OpenAPI document can state it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from api.services import services
from clipmod import keys
from clipmod.errors import ClipmodError, Unauthorized
from clipmod.models import Tenant

View = TypeVar("View", bound=Callable[..., Any])


def set_tenant(tenant: Tenant) -> None:
    g.tenant = Tenant(id=tenant.id, name=tenant.name)
    g.tenant_rate_limit = tenant.rate_limit


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
        set_tenant(key.tenant)
        g.is_admin = key.is_admin
        g.key_prefix = key.prefix
        g.scopes = list(keys.SCOPES) if key.scopes is None else list(key.scopes)


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
