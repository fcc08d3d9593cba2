"""The queue, the item page and decisions (single and bulk).

Pages are server-rendered and every state change is a plain form POST (with its CSRF token)
that redirects, so the dashboard works without JavaScript; `static/dashboard.js` only adds the
keyboard, selection and lease renewal on top.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import flash, jsonify, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.dashboard import banking
from api.dashboard.shell import admin_required, bp, me, wants_json
from api.services import services
from clipmod.db import transaction
from clipmod.errors import ClipmodError, InvalidInput
from clipmod.models import DecisionAction, Item, Tenant, Verdict, utcnow
from clipmod.review import audit, claims, decisions, queue
from clipmod.review.access import visible_item

PAGE_SIZE = 50
ACTION_WORDS = {"allow": "Allowed", "remove": "Removed", "escalate": "Escalated"}


def _lease() -> timedelta:
    return timedelta(seconds=services().settings.claim_lease_s)


def _float_arg(name: str) -> float | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}: {raw[:20]!r} is not a number", code="invalid_filter") from None
    if not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{name}: must be between 0 and 1", code="invalid_filter")
    return value


def queue_filter() -> queue.QueueFilter:
    escalated = request.args.get("queue") == "escalated"
    if escalated and not me().is_admin:
        escalated = False
    return queue.QueueFilter(
        tenant=request.args.get("tenant", "").strip()[:64] or None,
        category=request.args.get("category", "").strip()[:64] or None,
        min_score=_float_arg("min"),
        max_score=_float_arg("max"),
        escalated=escalated,
    )


def _queue(filt: queue.QueueFilter, template_title: str) -> Any:
    user = me()
    offset = max(0, request.args.get("offset", 0, type=int) or 0)
    settings = services().settings
    with services().sessions() as db:
        page = queue.page(db, user, filt, limit=PAGE_SIZE, offset=offset, now=utcnow())
        tokens = decisions.tokens(db, page.ids)
        categories = _category_ids(db)
        tenants = sorted(t.name for t in user.tenants) if not user.is_admin else _all_tenants(db)
    return render_template(
        "queue.html",
        title=template_title,
        page=page,
        tokens=tokens,
        filt=filt,
        args=filt.as_args(),
        categories=categories,
        tenants=tenants,
        blur_at=settings.blur_at,
        confirm_over=settings.bulk_confirm_over,
    )


def _all_tenants(db: Session) -> list[str]:
    return list(db.scalars(select(Tenant.name).order_by(Tenant.name)))


def _category_ids(db: Session) -> list[str]:
    """Categories of recent verdicts, for the filter menu."""
    seen: dict[str, None] = {}
    for cats in db.scalars(select(Verdict.categories).order_by(Verdict.id.desc()).limit(200)):
        for c in cats or []:
            seen.setdefault(c["id"], None)
    return list(seen)


@bp.get("/")
@login_required
def queue_page() -> Any:
    return _queue(queue_filter(), "Review queue")


def _args(base: dict[str, str], **more: str) -> dict[str, Any]:
    return {**base, **more}


@bp.get("/escalated")
@login_required
@admin_required
def escalated_page() -> Any:
    return redirect(
        url_for("dashboard.queue_page", **_args(request.args.to_dict(), queue="escalated"))
    )


@bp.get("/next")
@login_required
def next_item() -> Any:
    """Move on from `after` (j, or after a decision) or back from `before` (k)."""
    filt = queue_filter()
    after, before = request.args.get("after"), request.args.get("before")
    with transaction(services().sessions) as db:
        for leaving in (after, before):
            if leaving:
                claims.release(db, leaving, me())
        target = queue.next_waiting(db, me(), filt, now=utcnow(), after=after, before=before)
    if target is None:
        if after or before:
            flash("No more items that way." if before else "Nothing else is waiting.", "info")
        return redirect(url_for("dashboard.queue_page", **filt.as_args()))
    return redirect(url_for("dashboard.item_page", item_id=target, **filt.as_args()))


def _meta_text(item: Item) -> str:
    return json.dumps(item.meta, indent=2, ensure_ascii=False, sort_keys=True) if item.meta else ""


def render_item(item_id: str, *, error: ClipmodError | None = None, status: int = 200) -> Any:
    """The item page; takes or renews the claim when the item is waiting for this person."""
    user = me()
    filt = queue_filter()
    settings = services().settings
    held_by = None
    now = utcnow()
    with transaction(services().sessions) as db:
        item = visible_item(db, user, item_id)
        verdict = item.verdict
        current = decisions.current(db, item.id)
        waiting_for_me = verdict is not None and (
            current is None or (user.is_admin and current.action is DecisionAction.ESCALATE)
        )
        if waiting_for_me and error is None:
            try:
                claims.claim(db, item, user, _lease(), now=now)
            except claims.ClaimConflict as exc:
                held_by = exc
        elif error is not None and isinstance(error, claims.ClaimConflict):
            held_by = error
        claim = claims.holder(db, item.id, now=now)
        chain = decisions.history(db, item.id)
        policy_label = verdict.policy_version.label if verdict else None
        tenant = db.get(Tenant, item.tenant_id)
        can_decide = verdict is not None and held_by is None and (current is None or user.is_admin)
        context: dict[str, Any] = {
            "item": item,
            "verdict": verdict,
            "categories": verdict.categories if verdict else [],
            "current": current,
            "history": chain,
            "by_id": {d.id: d for d in chain},
            "superseded": {d.supersedes_id for d in chain if d.supersedes_id},
            "claim": claim,
            "held_by": held_by,
            "mine": claim is not None and claim.user_id == user.id,
            "can_decide": can_decide,
            "token": decisions.state_token(verdict, current),
            "policy_label": policy_label,
            "tenant": tenant.name if tenant else "?",
            "meta_text": _meta_text(item),
            "top": max(
                (verdict.categories if verdict else []), key=lambda c: c["score"], default=None
            ),
            # "Add to bank" (`api.dashboard.banking`): admins, scored items with an image.
            "banks": banking.banks_for(db, verdict.model_revision)
            if user.is_admin and verdict is not None and item.image_sha256
            else [],
        }
    top_score = float(context["top"]["score"]) if context["top"] else 0.0
    return render_template(
        "item.html",
        **context,
        error=error,
        args=filt.as_args(),
        blurred=item.image_sha256 is not None and top_score >= settings.blur_at,
        blur_at=settings.blur_at,
        lease_s=settings.claim_lease_s,
        now=now,
    ), status


@bp.get("/items/<item_id>")
@login_required
def item_page(item_id: str) -> Any:
    return render_item(item_id)


def _labels_from_form() -> dict[str, bool | None] | None:
    labels: dict[str, bool | None] = {}
    for key, value in request.form.items():
        if key.startswith("label-") and value in ("yes", "no"):
            labels[key.removeprefix("label-")] = value == "yes"
    return labels or None


def _action(raw: str | None) -> DecisionAction:
    try:
        return DecisionAction(raw or "")
    except ValueError:
        raise InvalidInput(
            "action: choose allow, remove or escalate", code="invalid_action"
        ) from None


@bp.post("/items/<item_id>/decide")
@login_required
def decide(item_id: str) -> Any:
    filt = queue_filter()
    request_ = decisions.DecisionRequest(
        action=_action(request.form.get("action")),
        labels=_labels_from_form(),
        reason=request.form.get("reason"),
        expected=request.form.get("expected") or None,
    )
    try:
        with transaction(services().sessions) as db:
            decisions.decide(db, me(), item_id, request_, lease=_lease())
    except ClipmodError as exc:
        if exc.status == 404 or wants_json():
            raise
        return render_item(item_id, error=exc, status=exc.status)
    flash(f"{ACTION_WORDS[request_.action.value]} item {item_id[:8]}.", "ok")
    return redirect(url_for("dashboard.next_item", after=item_id, **filt.as_args()), code=303)


@bp.post("/items/<item_id>/claim")
@login_required
def renew_claim(item_id: str) -> Any:
    with transaction(services().sessions) as db:
        item = visible_item(db, me(), item_id)
        claims.claim(db, item, me(), _lease())
        held = claims.holder(db, item.id)
    return jsonify(
        {
            "holder": held.holder if held else None,
            "expires_at": held.expires_at.isoformat() if held else None,
        }
    )


@bp.post("/items/<item_id>/reveal")
@login_required
def reveal(item_id: str) -> Any:
    with transaction(services().sessions) as db:
        item = visible_item(db, me(), item_id)
        top = max(
            (c["score"] for c in (item.verdict.categories if item.verdict else [])), default=0
        )
        audit.record(db, "reveal", user=me(), item=item, detail={"top_score": top})
    return jsonify({"revealed": item_id})


@bp.post("/bulk")
@login_required
def bulk() -> Any:
    filt = queue_filter()
    action = _action(request.form.get("action"))
    picked: list[tuple[str, str | None]] = []
    for value in request.form.getlist("item"):
        item_id, _, token = value.partition(":")
        picked.append((item_id[:32], token or None))
    over = services().settings.bulk_confirm_over
    if len(picked) > over and request.form.get("confirmed") != "yes":
        raise InvalidInput(
            f"{len(picked)} items selected: deciding more than {over} at once needs a "
            "confirmation. Go back and confirm.",
            code="confirmation_needed",
        )
    with transaction(services().sessions) as db:
        report = decisions.decide_many(
            db, me(), picked, action, reason=request.form.get("reason"), lease=_lease()
        )
    word = ACTION_WORDS[action.value]
    flash(f"{word} {len(report.decided)} item{'s' * (len(report.decided) != 1)}.", "ok")
    for item_id, why in report.skipped:
        flash(f"Skipped {item_id[:8]}: {why}", "warn")
    return redirect(url_for("dashboard.queue_page", **filt.as_args()), code=303)
