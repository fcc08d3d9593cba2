"""`/v1/policies`: publish, inspect, activate, stop shadow runs, lint and backtest; admin keys only.

Lint and backtest need prompt embeddings, so they need the model's text encoder, which the API
process otherwise never loads (scoring is the workers' job). The first such request loads the
runtime (`clipmod.runtime.ClipRuntime`, `CLIPMOD_MODEL` on `CLIPMOD_DEVICE`) and caches it in
`app.extensions` for the life of the process, together with the prompt banks it computed; a
lock keeps two concurrent first requests from loading it twice. Only admins ever pay for it,
and only once per API process. Stored traffic is re-scored from saved embeddings: no image
forward pass happens here.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, g, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import require_admin
from api.params import json_body
from api.services import services
from clipmod.models import PolicyVersion
from clipmod.policy import backtest, lint, rescore, ship, versions
from clipmod.policy import validate as policy_validation
from clipmod.policy.loader import PolicyError, parse_policy
from clipmod.policy.versions import activations_by_version, get_version, version_json
from clipmod.traffic.sync import TrafficStore

bp = Blueprint("policies", __name__, url_prefix="/v1/policies")
bp.before_request(require_admin)

RUNTIME_KEY = "clipmod.policy_runtime"
BANKS_KEY = "clipmod.policy_banks"
SOURCE = "yaml"  # problems read `yaml:LINE:COL field: message`: the body field they are in
_LOAD_LOCK = threading.Lock()

Body = TypeVar("Body", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scope(_Strict):
    tenants: list[str] = Field(default_factory=list)
    shadow: bool = False


class PublishBody(Scope):
    yaml: str = Field(min_length=1)
    activate: bool = True


class LintBody(_Strict):
    yaml: str = Field(min_length=1)
    strict: bool = False
    near_duplicate: float = Field(default=lint.NEAR_DUPLICATE_COS, ge=-1.0, le=1.0)


class BacktestBody(_Strict):
    yaml: str = Field(min_length=1)
    since: datetime | None = None
    against: str | None = None
    examples: int = Field(default=5, ge=0, le=100)


def policy_runtime() -> Any:
    """The text encoder for lint/backtest: loaded on first use, then kept (see module doc)."""
    ext = current_app.extensions
    if RUNTIME_KEY not in ext:
        with _LOAD_LOCK:
            if RUNTIME_KEY not in ext:
                from clipmod.runtime import ClipRuntime

                settings = services().settings
                ext[RUNTIME_KEY] = ClipRuntime.load(settings.model, settings.device)
    return ext[RUNTIME_KEY]


def _banks() -> rescore.BankCache:
    return current_app.extensions.setdefault(BANKS_KEY, rescore.BankCache())  # type: ignore[no-any-return]


class StopBody(_Strict):
    tenants: list[str] = Field(default_factory=list)


def _actor() -> ship.Actor:
    return ship.Actor(f"api:{g.tenant.name}")


def _store(revision: str) -> TrafficStore:
    """The traffic store lint and backtest read (`clipmod.traffic`), synced on each read."""
    return TrafficStore(services().settings.traffic_dir, revision)


def _activate(session: Session, version: PolicyVersion, scope: Scope) -> dict[str, Any]:
    done = ship.activate(
        session, version, actor=_actor(), tenant_names=scope.tenants, shadow=scope.shadow
    )
    return {"mode": done.mode.value, "tenants": done.tenants or None}


@bp.post("")
def publish() -> tuple[Response, int]:
    body = json_body(PublishBody)
    with services().sessions() as session, session.begin():
        published = ship.publish(session, body.yaml, actor=_actor(), source=SOURCE)
        activated = _activate(session, published.version, body) if body.activate else None
        where = activations_by_version(session).get(published.version.id, [])
        reply = {
            "version": version_json(published.version, where),
            "created": published.created,
            "activated": activated,
        }
    return jsonify(reply), 201 if published.created else 200


@bp.get("")
def list_versions() -> Response:
    with services().sessions() as session:
        where = activations_by_version(session)
        rows = versions.all_versions(session)
        return jsonify({"versions": [version_json(v, where.get(v.id, [])) for v in rows]})


@bp.get("/<ref>")
def show(ref: str) -> Response:
    with services().sessions() as session:
        version = get_version(session, ref)
        where = activations_by_version(session).get(version.id, [])
        return jsonify(version_json(version, where, yaml_text=True))


@bp.post("/<ref>/activate")
def activate(ref: str) -> Response:
    scope = json_body(Scope, optional=True)
    with services().sessions() as session, session.begin():
        version = get_version(session, ref)
        activated = _activate(session, version, scope)
        where = activations_by_version(session).get(version.id, [])
        return jsonify({"version": version_json(version, where), "activated": activated})


@bp.post("/shadow/stop")
def stop_shadow() -> Response:
    """End the shadow run of the named tenants (or everyone's); 409 `no_shadow_run` if none."""
    body = json_body(StopBody, optional=True)
    with services().sessions() as session, session.begin():
        stopped = ship.stop_shadow(session, actor=_actor(), tenant_names=body.tenants)
    return jsonify({"stopped": stopped, "tenants": body.tenants or None})


@bp.post("/lint")
def lint_policy() -> Response:
    body = json_body(LintBody)
    parse_policy(body.yaml, source=SOURCE)  # an invalid text is refused before the model loads
    runtime = policy_runtime()
    with services().sessions() as session:
        result = policy_validation.check(
            body.yaml,
            source=SOURCE,
            runtime=runtime,
            session=session,
            model_name=services().settings.model,
            near_duplicate=body.near_duplicate,
            store=_store(runtime.revision),
        )
    if result.problems:
        raise PolicyError(result.problems)
    findings = result.findings
    errors = sum(f.severity == "error" for f in findings)
    return jsonify(
        {
            "findings": [f.to_dict() for f in findings],
            "errors": errors,
            "warnings": len(findings) - errors,
            "status": lint.exit_status(findings, strict=body.strict),
        }
    )


@bp.post("/backtest")
def backtest_policy() -> Response:
    body = json_body(BacktestBody)
    policy = parse_policy(body.yaml, source=SOURCE)
    runtime = policy_runtime()
    with services().sessions() as session:
        against = get_version(session, body.against) if body.against else None
        report = backtest.backtest(
            session,
            policy,
            runtime,
            draft_label=f"{policy.name} (draft)",
            since=body.since,
            against=against,
            examples=body.examples,
            banks=_banks(),
            store=_store(runtime.revision),
        )
    return jsonify(report.to_dict())
