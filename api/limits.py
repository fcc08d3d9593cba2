"""Per-tenant rate limits on intake, with Flask-Limiter.

A tenant's limit is its `rate_limit` (set by an admin: `clipmod tenants set --rate-limit`, or
`PATCH /v1/tenants/<name>`), else `CLIPMOD_RATE_LIMIT`. `POST /v1/items` and the signed webhook
share one budget per tenant (scope "intake"); the webhook is counted only after its signature
is verified, so strangers cannot spend a tenant's budget. Counters live in Redis in production
(every API replica shares them) and in memory on the embedded default, which runs one API
process. If the counter store fails, requests are let through and the failure is logged:
intake is worth more than the limit.

A refusal is `429 too_many_requests` in the JSON error shape with `Retry-After` (seconds) and
the `X-RateLimit-*` headers.
"""

from __future__ import annotations

from flask import Flask, current_app, g
from flask_limiter import Limiter

from clipmod.settings import Settings

KEY = "clipmod.limiter"
SCOPE = "intake"


def _tenant_key() -> str:
    tenant = g.get("tenant")
    return f"tenant:{tenant.id}" if tenant is not None else "anonymous"


def _tenant_limit() -> str:
    # Flask-Limiter also lists this limit before the request is authenticated (it remembers
    # where a context-manager limit was used), without counting it: answer sanely then too.
    custom: str | None = g.get("tenant_rate_limit")
    return custom or str(current_app.extensions[KEY + ".default"])


def configure(app: Flask, settings: Settings) -> None:
    limiter = Limiter(
        key_func=_tenant_key,
        app=app,
        storage_uri=settings.limiter_storage_url,
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="clipmod",
        swallow_errors=True,
    )
    app.extensions[KEY] = limiter
    app.extensions[KEY + ".default"] = settings.rate_limit


def check_intake() -> None:
    """Count one intake request for `g.tenant`; raises `RateLimitExceeded` (429) when over."""
    limiter: Limiter = current_app.extensions[KEY]
    with limiter.shared_limit(_tenant_limit, scope=SCOPE):
        pass
