"""`POST /v1/webhooks/<tenant>`: the platform's upload webhook, signed instead of keyed.

The body is exactly what `POST /v1/items` takes (multipart or JSON) and goes through the same
parser and the same `accept`, so limits, errors and `external_id` idempotency are identical.
Authentication is the `Clipmod-Signature` header (see `clipmod.signing`) made with one of the
tenant's active webhook secrets; the raw body is read once and cached, so the signature covers
exactly the bytes that are then parsed.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from api import limits
from api.auth import set_tenant
from api.intake import parse_upload
from api.items import accept
from api.services import secret_box, services
from clipmod import signing, webhooks

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.post("/<tenant>")
def receive(tenant: str) -> tuple[Response, int]:
    svc = services()
    body = request.get_data(cache=True)
    found = webhooks.verify(
        svc.sessions,
        secret_box(),
        tenant,
        request.headers.get(signing.SIGNATURE_HEADER),
        body,
        svc.settings.webhook_tolerance_s,
    )
    set_tenant(found)
    limits.check_intake()
    return accept(g.tenant, parse_upload(request, svc.settings))
