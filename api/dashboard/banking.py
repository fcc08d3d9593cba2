""" "Add to bank" on an item page: an admin turns a reviewed item into a bank entry.

A moderator who has just removed a known scam or cleared the company's own logo is the person
who knows the item should be a near-duplicate entry; making them switch to the API or the CLI
means it rarely happens. The change goes through the same `clipmod.banks.registry` calls as
`POST /v1/banks/<name>/entries` (a new bank version; an item already in force is reported, not
added twice), is audited, and answers with a flash on the item page.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for
from flask_login import login_required
from sqlalchemy.orm import Session

from api.dashboard.shell import admin_required, bp, me
from api.services import services
from clipmod.banks import registry
from clipmod.db import transaction
from clipmod.errors import ClipmodError, InvalidInput
from clipmod.models import Bank
from clipmod.review import audit
from clipmod.review.access import visible_item


def banks_for(db: Session, revision: str | None) -> list[Bank]:
    """The banks an item's embedding can join: those of the model revision that scored it."""
    return [b for b in registry.all_banks(db) if revision is None or b.model_revision == revision]


@bp.post("/items/<item_id>/bank")
@login_required
@admin_required
def add_to_bank(item_id: str) -> Any:
    name = (request.form.get("bank") or "").strip()
    note = (request.form.get("note") or "").strip()[:2000]
    try:
        if not name:
            raise InvalidInput("choose a bank to add the item to", code="bank_required")
        with transaction(services().sessions) as db:
            item = visible_item(db, me(), item_id)
            bank = registry.get_bank(db, name, lock=True)
            change = registry.add_entries(
                db,
                bank,
                registry.from_items(db, bank, [item.id]),
                author=me().email,
                note=note or f"from the dashboard, item {item.id}",
            )
            if change.added:
                audit.record(
                    db,
                    "bank_add",
                    user=me(),
                    item=item,
                    detail={"bank": bank.name, "version": change.version.version},
                )
    except ClipmodError as exc:
        if exc.status == 404 and exc.code == "item_not_found":
            raise
        flash(f"Not added to bank {name or '?'}: {exc.message}", "error")
    else:
        if change.added:
            kind, version = bank.kind.value, change.version.version
            flash(f"Added to {kind} bank {bank.name} (version {version}).", "ok")
        else:
            flash(f"Already in bank {bank.name}: nothing changed.", "warn")
    return redirect(url_for("dashboard.item_page", item_id=item_id), code=303)
