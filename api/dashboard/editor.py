"""The policy editor: a draft in CodeMirror, checked as the admin types, then published.

Validation is `clipmod.policy.validate.check`, the function behind `clipmod policy lint` and
`POST /v1/policies/lint`, run with the workers' model and the stored traffic, so a marker in
the browser says exactly what the CLI would print. Checking also saves the draft: what the
server validated is what survives a reload. Publishing checks again on the server; a text with
errors is refused there whatever the page allowed.

CodeMirror injects its stylesheet as a `<style>` element, which the dashboard's CSP forbids
(`style-src 'self'`). The editor page alone adds a per-response nonce to `style-src`, and
CodeMirror puts that nonce on its element (`EditorView.cspNonce`); the page's script learns it
from its own `<script nonce>` (`document.currentScript.nonce`), so no inline script or
`'unsafe-inline'` is needed anywhere. That stylesheet draws the lint gutter's icons as `data:`
SVG images, so the page also allows `img-src data:`.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Literal

from flask import current_app, flash, jsonify, make_response, render_template, request, url_for
from flask_login import login_required
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.dashboard.policies import tenant_names
from api.dashboard.shell import CSP, admin_required, bp, me
from api.policies import policy_runtime
from api.services import services
from api.validation import validate as validate_body
from clipmod.db import transaction
from clipmod.errors import InvalidInput
from clipmod.models import PolicyVersion
from clipmod.policy import edit, rescore, ship, suggest, validate
from clipmod.policy.loader import MAX_POLICY_BYTES, PolicyError, parse_policy, text_bytes
from clipmod.review import drafts

SOURCE = "draft"  # problems read `draft:LINE:COL field: message`
TOOLS_KEY = "clipmod.editor_tools"
_TOOLS_LOCK = threading.Lock()


class Tools:
    """What the editor keeps per API process: the model behind a prompt-list cache, the prompt
    banks, and the stored traffic (see `clipmod.policy.validate`)."""

    def __init__(self, runtime: Any):
        self.encoder = validate.CachingEncoder(runtime)
        self.banks = rescore.BankCache()
        self.traffic = validate.TrafficCache()
        self.scores = validate.ScoreCache()


def tools() -> Tools:
    ext = current_app.extensions
    if TOOLS_KEY not in ext:
        runtime = policy_runtime()
        with _TOOLS_LOCK:
            ext.setdefault(TOOLS_KEY, Tools(runtime))
    return ext[TOOLS_KEY]  # type: ignore[no-any-return]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextBody(_Strict):
    yaml: str


class PublishBody(TextBody):
    then: Literal["store", "activate", "shadow"] = "store"
    tenant: str = ""


class SuggestBody(TextBody):
    target_precision: float = Field(default=0.95, gt=0.0, le=1.0)
    review_precision: float = Field(default=0.5, gt=0.0, le=1.0)


class ApplyBody(TextBody):
    category: str = Field(max_length=64)
    review_at: float | None = Field(default=None, ge=-1.0, le=1.0)
    block_at: float | None = Field(default=None, ge=-1.0, le=1.0)


def json_body(model: type[Any]) -> Any:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput("body: must be a JSON object", code="invalid_json")
    return validate_body(model, data)


def run_check(db: Session, text: str) -> validate.Validation:
    """The full check, exactly as `clipmod policy lint` runs it, with the editor's caches."""
    t = tools()
    return validate.check(
        text,
        source=SOURCE,
        runtime=t.encoder,
        session=db,
        model_name=services().settings.model,
        traffic=t.traffic.get(db, t.encoder.revision),
        banks=t.banks,
        scores=t.scores,
    )


def _validation_json(result: validate.Validation, **more: Any) -> dict[str, Any]:
    return {
        "markers": result.markers(),
        "errors": result.errors,
        "warnings": result.warnings,
        **more,
    }


@bp.get("/policies/drafts/<int:draft_id>")
@login_required
@admin_required
def editor_page(draft_id: int) -> Any:
    with services().sessions() as db:
        draft = drafts.get(db, me(), draft_id)
        base = db.get(PolicyVersion, draft.base_version_id) if draft.base_version_id else None
        tenants = tenant_names(db)
    nonce = secrets.token_urlsafe(18)
    resp = make_response(
        render_template(
            "policy_editor.html",
            title=f"Edit {draft.name}",
            draft=draft,
            base=base,
            tenants=tenants,
            nonce=nonce,
            check_url=url_for("dashboard.check_draft", draft_id=draft.id),
            publish_url=url_for("dashboard.publish_draft", draft_id=draft.id),
        )
    )
    # The nonce admits CodeMirror's <style> element; `data:` images are its lint gutter icons
    # (inline SVG in that stylesheet). An image, data: or not, runs no script.
    resp.headers["Content-Security-Policy"] = CSP.replace(
        "style-src 'self'", f"style-src 'self' 'nonce-{nonce}'"
    ).replace("img-src 'self'", "img-src 'self' data:")
    return resp


@bp.post("/policies/drafts/<int:draft_id>/check")
@login_required
@admin_required
def check_draft(draft_id: int) -> Any:
    """Save the draft (unless over the size limit) and say what is wrong with it, positioned."""
    body = json_body(TextBody)
    started = time.perf_counter()
    too_big = text_bytes(body.yaml) > MAX_POLICY_BYTES  # said in the markers, not saved
    with transaction(services().sessions) as db:
        if too_big:
            drafts.get(db, me(), draft_id)  # still a 404 for someone else's draft
        else:
            drafts.save(db, me(), draft_id, body.yaml)
        result = run_check(db, body.yaml)
    elapsed = round((time.perf_counter() - started) * 1000)
    return jsonify(_validation_json(result, saved=not too_big, elapsed_ms=elapsed))


@bp.post("/policies/drafts/<int:draft_id>/publish")
@login_required
@admin_required
def publish_draft(draft_id: int) -> Any:
    """Publish the draft's text, then store only, activate or shadow it for everyone or one
    tenant, all in one transaction: a refusal at any step leaves nothing behind."""
    body = json_body(PublishBody)
    actor = ship.Actor.of(me())
    scope = [body.tenant] if body.tenant else []
    with transaction(services().sessions) as db:
        drafts.save(db, me(), draft_id, body.yaml)
        result = run_check(db, body.yaml)
        if result.errors:
            return jsonify(
                {
                    "error": {
                        "code": "policy_has_errors",
                        "message": f"not published: the draft has {result.errors} error(s)",
                    },
                    **_validation_json(result),
                }
            ), 422
        published = ship.publish(db, body.yaml, actor=actor, source=SOURCE)
        version = published.version
        if body.then != "store":
            ship.activate(
                db, version, actor=actor, tenant_names=scope, shadow=body.then == "shadow"
            )
        label = version.label
    who = body.tenant or "everyone"
    said = (
        f"Published {label}."
        if published.created
        else (f"Nothing new to publish: this exact text is already {label}.")
    )
    if body.then == "activate":
        said += f" It is active for {who}."
    elif body.then == "shadow":
        said += f" It runs in shadow for {who}."
    flash(said, "ok" if published.created else "info")
    return jsonify(
        {
            "version": label,
            "created": published.created,
            "message": said,
            "redirect": url_for("dashboard.policies_page"),
        }
    )


@bp.post("/policies/suggest")
@login_required
@admin_required
def suggest_thresholds() -> Any:
    """`clipmod policy suggest` for the draft's categories, from moderators' decisions."""
    body = json_body(SuggestBody)
    policy = parse_policy(body.yaml, source=SOURCE)
    t = tools()
    with services().sessions() as db:
        report = suggest.suggest(
            db,
            policy,
            t.encoder,
            policy_label="draft",
            target_precision=body.target_precision,
            review_precision=min(body.review_precision, body.target_precision),
            banks=t.banks,
        )
    return jsonify(report.to_dict())


@bp.post("/policies/apply")
@login_required
@admin_required
def apply_thresholds() -> Any:
    """The draft text with one category's thresholds replaced where they stand in the text."""
    body = json_body(ApplyBody)
    values = {
        k: v
        for k, v in (("review_at", body.review_at), ("block_at", body.block_at))
        if v is not None
    }
    if not values:
        raise InvalidInput("nothing to apply: give review_at and/or block_at", code="invalid_input")
    return jsonify({"yaml": edit.set_thresholds(body.yaml, body.category, values)})


@bp.errorhandler(PolicyError)
def _invalid_policy(exc: PolicyError) -> Any:
    result = validate.Validation(SOURCE, None, problems=exc.problems)
    return jsonify(
        {"error": {"code": exc.code, "message": str(exc)}, **_validation_json(result)}
    ), 422
