"""`GET /v1/openapi.json`: the OpenAPI 3.1 document, generated from the running app.

Paths and methods come from Flask's URL map, scopes from the views' `requires`, and every body
from a pydantic model (`api.schemas`, intake's `UploadFields`, the policy bodies): only the
summaries and the list of answers per operation are written here. Building the document fails
on a `/v1` route this table does not describe, so a new endpoint cannot ship undocumented
(`tests/platform/test_openapi.py` builds it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel

from api import schemas as s
from api.banks import AddBody as BankAdd
from api.banks import BacktestBody as BankBacktest
from api.banks import CreateBody as BankCreate
from api.banks import RemoveBody as BankRemove
from api.decisions import DecisionBody
from api.intake import UploadFields
from api.policies import BacktestBody, LintBody, PublishBody, Scope, StopBody

bp = Blueprint("openapi", __name__, url_prefix="/v1")
KEY = "clipmod.openapi"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Op:
    summary: str
    ok: dict[int, type[BaseModel] | None]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    multipart: bool = False
    auth: str = "key"  # key | admin | signature | none
    query: dict[str, dict[str, Any]] = field(default_factory=dict)


_STR = {"type": "string"}
_LIMIT = {"type": "integer", "description": "Page size, 1-100 (clamped)."}
_CURSOR = {"type": "string", "description": "`next_cursor` of the previous page."}
_INTAKE_ERRORS = (400, 409, 413, 415, 422, 429, 503)

OPERATIONS: dict[str, Op] = {
    "items.create_item": Op(
        "Submit an item (image, text, image_url) for scoring",
        {202: s.ItemAccepted, 200: s.ItemOut},
        _INTAKE_ERRORS,
        UploadFields,
        multipart=True,
    ),
    "items.list_items": Op(
        "The tenant's items, newest first",
        {200: s.ItemPage},
        (422,),
        query={
            "status": {"type": "string", "enum": ["queued", "processing", "scored", "failed"]},
            "action": {"type": "string", "enum": ["allow", "review", "block"]},
            "limit": _LIMIT,
            "cursor": _CURSOR,
        },
    ),
    "items.get_item": Op("One item and its verdict", {200: s.ItemOut}, (404, 410)),
    "items.delete_item": Op("Delete an item (tombstone); again: 410", {204: None}, (404, 410)),
    "items.retry_item": Op(
        "Queue a failed item again (409 unless it failed)", {202: s.ItemAccepted}, (404, 409, 410)
    ),
    "webhooks.receive": Op(
        "The platform's signed upload webhook (body as POST /v1/items)",
        {202: s.ItemAccepted, 200: s.ItemOut},
        _INTAKE_ERRORS,
        UploadFields,
        multipart=True,
        auth="signature",
    ),
    "deliveries.list_deliveries": Op(
        "The tenant's callback log, newest first",
        {200: s.DeliveryPage},
        (422,),
        query={
            "status": {"type": "string", "enum": ["pending", "succeeded", "dead"]},
            "limit": _LIMIT,
            "cursor": _CURSOR,
        },
    ),
    "deliveries.get_delivery": Op("One delivery with every attempt", {200: s.DeliveryOut}, (404,)),
    "deliveries.redeliver": Op(
        "Send a dead or delivered callback again", {202: s.DeliveryOut}, (404, 409)
    ),
    "tenant.show": Op("This tenant's integration settings", {200: s.TenantOut}),
    "tenant.set_callback": Op(
        "Set or clear the callback URL", {200: s.TenantOut}, (422,), s.CallbackUpdate
    ),
    "tenant.create_secret": Op(
        "Create (or rotate to) a signing secret; shown once",
        {201: s.SecretCreated},
        (409, 422),
        s.SecretCreate,
    ),
    "tenant.revoke_secret": Op("Revoke a signing secret", {200: s.SecretOut}, (404,)),
    "admin.list_keys": Op(
        "API keys (never their secrets)", {200: s.KeyList}, auth="admin", query={"tenant": _STR}
    ),
    "admin.create_key": Op(
        "Create an API key; shown once", {201: s.KeyCreated}, (422,), s.KeyCreate, auth="admin"
    ),
    "admin.revoke_key": Op("Revoke a key at once", {200: s.KeyOut}, (404,), auth="admin"),
    "admin.rotate_key": Op(
        "Replace a key; the old one ends after grace_s",
        {201: s.KeyCreated},
        (404, 422),
        s.KeyRotate,
        auth="admin",
    ),
    "admin.show_tenant": Op("A tenant's settings", {200: s.TenantOut}, (404,), auth="admin"),
    "admin.patch_tenant": Op(
        "Set a tenant's rate limit or callback URL",
        {200: s.TenantOut},
        (404, 422),
        s.TenantPatch,
        auth="admin",
    ),
    "policies.publish": Op(
        "Publish a policy version",
        {201: s.PublishOut, 200: s.PublishOut},
        (422,),
        PublishBody,
        auth="admin",
    ),
    "policies.list_versions": Op("Policy versions", {200: s.VersionList}, auth="admin"),
    "policies.show": Op(
        "One version with its YAML", {200: s.PolicyVersionText}, (404,), auth="admin"
    ),
    "policies.activate": Op(
        "Put a version in force", {200: s.ActivateOut}, (404, 422), Scope, auth="admin"
    ),
    "policies.stop_shadow": Op(
        "Stop the shadow run of the named tenants (or everyone's)",
        {200: s.StopShadowOut},
        (409, 422),
        StopBody,
        auth="admin",
    ),
    "policies.lint_policy": Op("Lint a draft", {200: s.LintOut}, (422,), LintBody, auth="admin"),
    "policies.backtest_policy": Op(
        "Backtest a draft on stored traffic",
        {200: s.Report},
        (404, 422),
        BacktestBody,
        auth="admin",
    ),
    "decisions.record_decision": Op(
        "Record what the platform's moderators decided (final; supersedes earlier ones)",
        {201: s.DecisionOut},
        (404, 409, 410, 422),
        DecisionBody,
    ),
    "decisions.list_decisions": Op(
        "An item's decisions, oldest first", {200: s.DecisionList}, (404, 410)
    ),
    "banks.list_banks": Op("Embedding banks and their newest versions", {200: None}, auth="admin"),
    "banks.create": Op(
        "Create a bank (block, review or allow)", {201: None}, (409, 422), BankCreate, auth="admin"
    ),
    "banks.show": Op(
        "One bank (name or name@version), optionally with its entries",
        {200: None},
        (404, 422),
        auth="admin",
        query={"entries": _STR, "limit": _LIMIT, "offset": {"type": "integer"}},
    ),
    "banks.add": Op(
        "Add entries from stored items (JSON) or uploaded images (multipart `file`)",
        {201: None},
        (404, 409, 413, 415, 422),
        BankAdd,
        auth="admin",
    ),
    "banks.remove": Op(
        "Remove entries by id: a new bank version",
        {201: None},
        (404, 422),
        BankRemove,
        auth="admin",
    ),
    "banks.remove_one": Op(
        "Remove one entry: a new bank version", {201: None}, (404,), auth="admin"
    ),
    "banks.backtest_change": Op(
        "Backtest a bank change on stored traffic",
        {200: None},
        (404, 422),
        BankBacktest,
        auth="admin",
    ),
    "search.search": Op(
        "Semantic search over stored traffic: by text, or like an item",
        {200: None},
        (404, 422),
        auth="admin",
        query={"text": _STR, "like": _STR, "tenant": _STR, "limit": _LIMIT},
    ),
    "openapi.document": Op("This document", {200: None}, auth="none"),
}

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "key": [{"bearer": []}],
    "admin": [{"bearer": []}],
    "signature": [{"signature": []}],
    "none": [],
}


class _Schemas:
    """Collects component schemas, flattening pydantic's `$defs` into `components`."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.components:
            schema = model.model_json_schema(ref_template=REF)
            for name, sub in schema.pop("$defs", {}).items():
                self.components.setdefault(name, sub)
            if model is UploadFields:
                for name, text in s.upload_descriptions().items():
                    schema["properties"][name]["description"] = text
            self.components[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}


def _path(rule: str) -> tuple[str, list[str]]:
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule)
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule), names


def _operation(app: Flask, endpoint: str, op: Op, params: list[str], reg: _Schemas) -> Any:
    scope = getattr(app.view_functions[endpoint], "required_scope", None)
    doc: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": op.summary,
        "tags": [endpoint.split(".")[0]],
        "security": _SECURITY[op.auth],
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
        + [{"name": n, "in": "query", "schema": sch} for n, sch in op.query.items()],
        "responses": {},
    }
    if scope:
        doc["description"] = f"Needs a key with the `{scope}` scope."
    if op.body is not None:
        content = {"application/json": {"schema": reg.ref(op.body)}}
        if op.multipart:
            content["multipart/form-data"] = {"schema": reg.ref(s.MultipartItem)}
        doc["requestBody"] = {"required": True, "content": content}
    for status, model in op.ok.items():
        answer: dict[str, Any] = {"description": "OK"}
        if model is not None:
            answer["content"] = {"application/json": {"schema": reg.ref(model)}}
        elif status == 200:
            answer["content"] = {"application/json": {"schema": {"type": "object"}}}
        doc["responses"][str(status)] = answer
    auth_errors = () if op.auth in ("none",) else (401, 403)
    error = {"content": {"application/json": {"schema": reg.ref(s.Error)}}}
    for status in sorted({*auth_errors, *op.errors}):
        doc["responses"][str(status)] = {"description": "Error", **error}
    doc["responses"]["default"] = {"description": "Any other error, same shape", **error}
    return doc


def build(app: Flask) -> dict[str, Any]:
    reg = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1"):
            continue
        op = OPERATIONS.get(rule.endpoint)
        if op is None:
            raise LookupError(f"{rule.endpoint} ({rule.rule}) is missing from api.openapi")
        path, params = _path(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(
                app, rule.endpoint, op, params, reg
            )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clipmod",
            "version": "1",
            "description": "Content moderation on CLIP. Errors are always "
            '`{"error": {"code", "message"}}`; see the README for every code.',
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(reg.components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "signature": {"type": "apiKey", "in": "header", "name": "Clipmod-Signature"},
            },
        },
    }


@bp.get("/openapi.json")
def document() -> Response:
    ext = current_app.extensions
    if KEY not in ext:
        ext[KEY] = build(current_app)
    return jsonify(ext[KEY])
