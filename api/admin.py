"""`/v1/keys` and `/v1/tenants/<name>`: what `clipmod keys …` and `clipmod tenants …` do, for
admin keys over the API. A key's secret appears once, in the answer that creates it."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.auth import require_admin
from api.params import json_body
from api.schemas import KeyCreate, KeyRotate, TenantPatch
from api.services import secret_box, services
from api.tenant import created_json
from clipmod import keys, netguard, tenants

bp = Blueprint("admin", __name__, url_prefix="/v1")
bp.before_request(require_admin)


@bp.get("/keys")
def list_keys() -> Response:
    """Every key (or one tenant's, `?tenant=`): prefixes and state, never secrets."""
    with services().sessions() as session:
        rows = keys.list_keys(session, request.args.get("tenant"))
        return jsonify({"keys": [keys.describe(r) for r in rows]})


@bp.post("/keys")
def create_key() -> tuple[Response, int]:
    body = json_body(KeyCreate)
    with services().sessions() as session, session.begin():
        key = keys.create_key(
            session,
            body.tenant,
            body.label,
            admin=body.admin,
            scopes=list(body.scopes) if body.scopes is not None else None,
        )
        row = keys.find(session, keys.prefix_of(key))
        return jsonify({**keys.describe(row), "key": key}), 201


@bp.post("/keys/<prefix>/revoke")
def revoke_key(prefix: str) -> Response:
    with services().sessions() as session, session.begin():
        return jsonify(keys.describe(keys.revoke(session, prefix)))


@bp.post("/keys/<prefix>/rotate")
def rotate_key(prefix: str) -> tuple[Response, int]:
    body = json_body(KeyRotate, optional=True)
    with services().sessions() as session, session.begin():
        rotated = keys.rotate(session, prefix, body.grace_s)
        row = keys.find(session, keys.prefix_of(rotated.key))
        return jsonify({**keys.describe(row), "key": rotated.key}), 201


@bp.get("/tenants/<name>")
def show_tenant(name: str) -> Response:
    with services().sessions() as session:
        return jsonify(tenants.tenant_json(session, keys.get_tenant(session, name)))


@bp.patch("/tenants/<name>")
def patch_tenant(name: str) -> Response:
    """Fields left out stay as they are; an empty string resets one."""
    body = json_body(TenantPatch)
    policy = netguard.AddressPolicy.parse(services().settings.fetch_allow)
    with services().sessions() as session, session.begin():
        tenant = keys.get_tenant(session, name)
        new = None
        if body.rate_limit is not None:
            tenants.set_rate_limit(session, tenant, body.rate_limit or None)
        if body.callback_url is not None:
            new = tenants.set_callback(
                session, secret_box(), tenant, body.callback_url or None, policy
            )
        reply = tenants.tenant_json(session, tenant)
        reply["new_callback_secret"] = created_json(new) if new else None
        return jsonify(reply)
