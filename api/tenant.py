"""`/v1/tenant`: a tenant's own integration settings (scope `tenant:manage`).

Signing secrets appear in full exactly once, in the answer that creates them; afterwards only
their id and first characters (`hint`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify
from sqlalchemy.orm import Session

from api.auth import authenticate_request, requires
from api.params import json_body
from api.schemas import CallbackUpdate, SecretCreate
from api.services import secret_box, services
from clipmod import netguard, tenants
from clipmod.models import SecretPurpose, Tenant

bp = Blueprint("tenant", __name__, url_prefix="/v1/tenant")
bp.before_request(authenticate_request)


def created_json(new: tenants.NewSecret) -> dict[str, Any]:
    return {**tenants.secret_json(new.row), "secret": new.secret}


def _tenant(session: Session) -> Tenant:
    tenant = session.get(Tenant, g.tenant.id)
    assert tenant is not None
    return tenant


def _policy() -> netguard.AddressPolicy:
    return netguard.AddressPolicy.parse(services().settings.fetch_allow)


@bp.get("")
@requires("tenant:manage")
def show() -> Response:
    with services().sessions() as session:
        return jsonify(tenants.tenant_json(session, _tenant(session)))


@bp.put("/callback")
@requires("tenant:manage")
def set_callback() -> Response:
    body = json_body(CallbackUpdate)
    with services().sessions() as session, session.begin():
        tenant = _tenant(session)
        new = tenants.set_callback(session, secret_box(), tenant, body.url, _policy())
        reply = tenants.tenant_json(session, tenant)
        reply["new_callback_secret"] = created_json(new) if new else None
        return jsonify(reply)


@bp.post("/secrets")
@requires("tenant:manage")
def create_secret() -> tuple[Response, int]:
    body = json_body(SecretCreate)
    purpose = SecretPurpose(body.purpose)
    with services().sessions() as session, session.begin():
        if body.rotate:
            new = tenants.rotate_secret(session, secret_box(), g.tenant.id, purpose, body.grace_s)
        else:
            new = tenants.create_secret(session, secret_box(), g.tenant.id, purpose)
        return jsonify(created_json(new)), 201


@bp.post("/secrets/<secret_id>/revoke")
@requires("tenant:manage")
def revoke_secret(secret_id: str) -> Response:
    with services().sessions() as session, session.begin():
        row = tenants.revoke_secret(session, g.tenant.id, secret_id)
        return jsonify(tenants.secret_json(row))
