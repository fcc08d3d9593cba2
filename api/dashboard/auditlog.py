"""The audit log for admins: filter, page through, export as CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, render_template, request
from flask_login import login_required

from api.dashboard.shell import admin_required, bp
from api.services import services
from clipmod.errors import InvalidInput
from clipmod.review import audit

PAGE_SIZE = 100
EXPORT_LIMIT = 100_000


def _date(name: str, *, end: bool = False) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{name}: use a date like 2026-11-28", code="invalid_filter") from None
    return day + timedelta(days=1) if end else day


def _filter() -> audit.AuditFilter:
    action = request.args.get("action", "").strip()
    if action and action not in audit.ACTIONS:
        raise InvalidInput(f"action: unknown action {action[:32]!r}", code="invalid_filter")
    return audit.AuditFilter(
        actor=request.args.get("actor", "").strip()[:254] or None,
        action=action or None,
        item_id=request.args.get("item", "").strip()[:32] or None,
        since=_date("since"),
        until=_date("until", end=True),
    )


@bp.get("/audit")
@login_required
@admin_required
def audit_page() -> Any:
    filt = _filter()
    offset = max(0, request.args.get("offset", 0, type=int) or 0)
    with services().sessions() as db:
        rows = audit.events(db, filt, limit=PAGE_SIZE, offset=offset)
        total = audit.count(db, filt)
    args = {k: v for k, v in request.args.items() if k != "offset" and v}
    return render_template(
        "audit.html",
        rows=rows,
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        args=args,
        actions=audit.ACTIONS,
    )


@bp.get("/audit.csv")
@login_required
@admin_required
def audit_csv() -> Any:
    filt = _filter()
    with services().sessions() as db:
        rows = audit.events(db, filt, limit=EXPORT_LIMIT)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Response(
        audit.to_csv(rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="clipmod-audit-{stamp}.csv"'},
    )
