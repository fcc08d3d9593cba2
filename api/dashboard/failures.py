"""Failed items for admins: what failed and why, and one click to queue them again.

The operator's half of `clipmod.retry`: after an incident (image hosts down, workers dying on a
bad deploy) the page shows the failures by error code, transient ones marked, and retries one
item, or every failure of a code, without a shell on the servers. Each retry is audited.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_login import login_required
from sqlalchemy.orm import Session

from api.dashboard.shell import add_nav, admin_required, bp, me
from api.services import services
from clipmod import keys, retry
from clipmod.db import transaction
from clipmod.errors import InvalidInput, NotFound
from clipmod.models import Item, Tenant
from clipmod.review import audit

add_nav("Failed", "dashboard.failed_page")

SHOWN = 100


def _args() -> dict[str, Any]:
    source = request.form if request.method == "POST" else request.args
    return {k: source.get(k, "").strip()[:64] for k in ("code", "tenant") if source.get(k)}


def _filter(db: Session, args: dict[str, Any]) -> retry.FailedFilter:
    tenant_ids = None
    if "tenant" in args:
        try:
            tenant_ids = [keys.get_tenant(db, args["tenant"]).id]
        except NotFound:
            raise InvalidInput(
                f"tenant: no tenant {args['tenant']!r}", code="invalid_filter"
            ) from None
    return retry.FailedFilter(
        tenant_ids=tenant_ids, codes=[args["code"]] if "code" in args else None
    )


@bp.get("/failed")
@login_required
@admin_required
def failed_page() -> Any:
    args = _args()
    with services().sessions() as db:
        which = _filter(db, args)
        counts = retry.by_code(db, retry.FailedFilter(tenant_ids=which.tenant_ids))
        rows = retry.newest(db, which, SHOWN)
        names = dict(db.query(Tenant.id, Tenant.name).all())
    return render_template(
        "failed.html",
        args=args,
        counts=counts,
        total=sum(n for code, n in counts.items() if "code" not in args or code == args["code"]),
        transient_total=sum(n for code, n in counts.items() if code in retry.TRANSIENT_CODES),
        rows=rows,
        names=names,
        transient=retry.TRANSIENT_CODES,
        shown=SHOWN,
        confirm_over=services().settings.bulk_confirm_over,
    )


@bp.post("/failed/retry")
@login_required
@admin_required
def retry_failed() -> Any:
    """One item (`item`), or every failure matching the page's filters (`code`, `tenant`)."""
    args = _args()
    item_id = request.form.get("item", "").strip()[:32]
    svc = services()
    with transaction(svc.sessions) as db:
        if item_id:
            which = retry.FailedFilter(item_ids=[item_id])
        else:
            which = _filter(db, args)
            if "code" not in args:  # "Retry all" without a code: the transient ones
                which = retry.FailedFilter(tenant_ids=which.tenant_ids, codes=retry.TRANSIENT_CODES)
        ids = retry.requeue(db, which)
        item = db.get(Item, item_id) if item_id else None
        audit.record(db, "retry", user=me(), item=item, detail={"count": len(ids), **args})
    woken = retry.wake(svc.celery, ids)
    n = len(ids)
    flash(f"Queued {n} failed item{'s' * (n != 1)} again." if n else "Nothing to retry.", "ok")
    if n == retry.MAX_RETRY:
        flash(f"A retry takes at most {n} items: press it again for the rest.", "warn")
    if n and not woken:
        flash("The broker is unreachable: a worker will be woken by the reconciler.", "warn")
    if item_id and request.form.get("back") == "item":  # from the item's own page
        return redirect(url_for("dashboard.item_page", item_id=item_id), code=303)
    return redirect(url_for("dashboard.failed_page", **args), code=303)
