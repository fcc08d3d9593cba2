"""Policy pages for admins: versions and where they are in force, shipping, diffs, shadow report.

Shipping is plain forms that redirect with a message, like the rest of the dashboard: each
goes through `clipmod.policy.ship` (the same functions as the CLI and the API, audited), in one
transaction, so a refused change (an unknown version or tenant, no shadow run to stop) is a
message at the top of the page and nothing half-done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.dashboard.shell import add_nav, admin_required, bp, me
from api.services import services
from clipmod.bundled import declared_model_id
from clipmod.db import transaction
from clipmod.errors import ClipmodError, InvalidInput
from clipmod.models import ActivationMode, PolicyVersion, Tenant
from clipmod.policy import diff, shadow, ship, versions
from clipmod.policy.loader import PolicyError
from clipmod.review import audit, drafts

add_nav("Policies", "dashboard.policies_page")

HISTORY = 25


def tenant_names(db: Session) -> list[str]:
    return list(db.scalars(select(Tenant.name).order_by(Tenant.name)))


def _in_force(db: Session) -> list[dict[str, Any]]:
    """Per scope (everyone first, then tenants with their own): the active and shadow version."""
    names = [None, *tenant_names(db)]
    ids = dict(db.execute(select(Tenant.name, Tenant.id)).all())
    rows = []
    for name in names:
        tenant_id = ids[name] if name else None
        own = {
            mode: versions.own_activation(db, tenant_id, mode)
            for mode in (ActivationMode.ACTIVE, ActivationMode.SHADOW)
        }
        if name and not any(
            r and r.mode in (ActivationMode.ACTIVE, ActivationMode.SHADOW) for r in own.values()
        ):
            continue  # follows everyone's
        row: dict[str, Any] = {"tenant": name}
        for mode, key in ((ActivationMode.ACTIVE, "active"), (ActivationMode.SHADOW, "shadow")):
            act = own[mode]
            row[key] = (
                db.get(PolicyVersion, act.policy_version_id) if act and act.mode == mode else None
            )
        rows.append(row)
    return rows


@bp.get("/policies")
@login_required
@admin_required
def policies_page() -> Any:
    with services().sessions() as db:
        rows = versions.all_versions(db)
        where = versions.activations_by_version(db)
        context = {
            "versions": rows,
            "where": where,
            "in_force": _in_force(db),
            "drafts": drafts.mine(db, me()),
            "tenants": tenant_names(db),
            "history": audit.events(
                db, audit.AuditFilter(actions=audit.POLICY_ACTIONS), limit=HISTORY
            ),
            "current": versions.resolve(db, None),
        }
    return render_template("policies.html", title="Policies", **context)


def _back() -> Any:
    return redirect(url_for("dashboard.policies_page"))


def _refused(exc: ClipmodError) -> Any:
    message = exc.message if not isinstance(exc, PolicyError) else str(exc.problems[0])
    flash(f"Nothing changed: {message}", "error")
    return _back()


def _scope() -> list[str]:
    tenant = request.form.get("tenant", "").strip()
    return [tenant] if tenant else []


@bp.post("/policies/versions/<int:version_id>/activate")
@login_required
@admin_required
def activate_version(version_id: int) -> Any:
    """Activate (or, with mode=shadow, shadow) a version for one tenant or everyone.

    Activating an older version than a scope runs is the rollback; the page asks first."""
    shadow_mode = request.form.get("mode") == "shadow"
    scope = _scope()
    try:
        with transaction(services().sessions) as db:
            version = db.get(PolicyVersion, version_id)
            if version is None:
                raise InvalidInput(
                    f"policy version {version_id} does not exist (it may never have been "
                    "published): reload the page",
                    code="policy_version_not_found",
                )
            tenant_ids: list[int | None] = [t.id for t in versions.tenants_by_name(db, scope)]
            tenant_ids = tenant_ids or [None]
            rollback = not shadow_mode and ship.is_rollback(db, version, tenant_ids)
            ship.activate(
                db, version, actor=ship.Actor.of(me()), tenant_names=scope, shadow=shadow_mode
            )
            label = version.label
    except ClipmodError as exc:
        return _refused(exc)
    who = ", ".join(scope) or "everyone"
    if shadow_mode:
        flash(
            f"{label} now runs in shadow for {who}: its verdicts are recorded, never acted on.",
            "ok",
        )
    elif rollback:
        flash(f"Rolled back: {label} is active for {who}.", "ok")
    else:
        flash(f"{label} is active for {who}.", "ok")
    return _back()


@bp.post("/policies/shadow/stop")
@login_required
@admin_required
def stop_shadow() -> Any:
    scope = _scope()
    try:
        with transaction(services().sessions) as db:
            stopped = ship.stop_shadow(db, actor=ship.Actor.of(me()), tenant_names=scope)
    except ClipmodError as exc:
        return _refused(exc)
    flash(
        f"Stopped the shadow run of {', '.join(stopped)} for {', '.join(scope) or 'everyone'}.",
        "ok",
    )
    return _back()


@bp.post("/policies/drafts")
@login_required
@admin_required
def new_draft() -> Any:
    """Open a version (or a blank policy) in the editor: a new draft of the signed-in admin."""
    raw = request.form.get("version_id", "").strip()
    try:
        with transaction(services().sessions) as db:
            base = None
            if raw:
                base = db.get(PolicyVersion, int(raw)) if raw.isdigit() else None
                if base is None:
                    raise InvalidInput(
                        f"policy version {raw[:20]!r} does not exist",
                        code="policy_version_not_found",
                    )
            text = base.yaml_text if base else drafts.blank_policy(_model_name())
            draft = drafts.create(db, me(), text, base=base)
            draft_id = draft.id
    except ClipmodError as exc:
        return _refused(exc)
    return redirect(url_for("dashboard.editor_page", draft_id=draft_id))


def _model_name() -> str:
    setting = services().settings.model
    return declared_model_id(Path(setting)) or Path(setting).name or setting


@bp.post("/policies/drafts/<int:draft_id>/delete")
@login_required
@admin_required
def delete_draft(draft_id: int) -> Any:
    try:
        with transaction(services().sessions) as db:
            drafts.delete(db, me(), draft_id)
    except ClipmodError as exc:
        return _refused(exc)
    flash("Draft deleted.", "info")
    return _back()


def _version_arg(db: Session, name: str) -> PolicyVersion | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    return versions.get_version(db, raw)


@bp.get("/policies/diff")
@login_required
@admin_required
def diff_page() -> Any:
    """Two versions side by side; by default the newest against the one before it."""
    with services().sessions() as db:
        rows = versions.all_versions(db)
        left, right = _version_arg(db, "a"), _version_arg(db, "b")
        if right is None and rows:
            right = rows[0]
        if left is None and right is not None:
            left = db.get(PolicyVersion, right.parent_id) if right.parent_id else right
        context: dict[str, Any] = {"versions": rows, "left": left, "right": right}
        if left is not None and right is not None:
            context["rows"] = diff.folded(diff.side_by_side(left.yaml_text, right.yaml_text))
            context["words"] = diff.in_words(versions.load(left), versions.load(right))
    return render_template("policy_diff.html", title="Compare versions", **context)


@bp.get("/policies/shadow-report")
@login_required
@admin_required
def shadow_page() -> Any:
    with services().sessions() as db:
        version = _version_arg(db, "version")
        report = shadow.shadow_report(db, version=version, examples=8)
        running = [
            (db.get(PolicyVersion, vid), w)
            for vid, where in versions.activations_by_version(db).items()
            for w in where
            if w["mode"] == "shadow"
        ]
        context = {"report": report, "version": version, "running": running}
    return render_template("policy_shadow.html", title="Shadow report", **context)
