"""Semantic search and "find similar" pages (the maths is in `clipmod.review.search`).

The text encoder is the one the policy endpoints load (`api.policies.policy_runtime`): loaded
on the first search, under a lock, then kept for the life of the process, and shared. The rows
come from the traffic store, as for `GET /v1/search`.
"""

from __future__ import annotations

from typing import Any

from flask import render_template, request
from flask_login import login_required
from sqlalchemy import select

from api.dashboard.shell import bp, me
from api.policies import policy_runtime
from api.services import services
from clipmod.db import transaction
from clipmod.errors import ClipmodError
from clipmod.models import Item, Tenant, Verdict
from clipmod.review import audit, search
from clipmod.review.access import visible_item
from clipmod.traffic.sync import TrafficStore


def _store(revision: str) -> TrafficStore:
    return TrafficStore(services().settings.traffic_dir, revision)


def _cards(db: Any, hits: list[search.Hit]) -> list[dict[str, Any]]:
    ids = [h.item_id for h in hits]
    rows = {
        item.id: (item, verdict, tenant)
        for item, verdict, tenant in db.execute(
            select(Item, Verdict, Tenant.name)
            .outerjoin(Verdict, Verdict.item_id == Item.id)
            .join(Tenant, Tenant.id == Item.tenant_id)
            .where(Item.id.in_(ids))
        )
    }
    cards = []
    for hit in hits:
        item, verdict, tenant = rows[hit.item_id]
        cats = verdict.categories if verdict else []
        cards.append(
            {
                "hit": hit,
                "item": item,
                "tenant": tenant,
                "action": verdict.action.value if verdict else item.status.value,
                "top": max((float(c["score"]) for c in cats), default=0.0),
            }
        )
    return cards


@bp.get("/search")
@login_required
def search_page() -> Any:
    query = request.args.get("q", "")
    settings = services().settings
    if not query:
        return render_template("search.html", query="", cards=None, blur_at=settings.blur_at)
    try:
        search.check_query(query)
    except ClipmodError as exc:
        return render_template(
            "search.html",
            query=query[:300],
            cards=None,
            error=exc.message,
            blur_at=settings.blur_at,
        ), exc.status
    runtime = policy_runtime()
    with transaction(services().sessions) as db:
        hits = search.search_text(db, me(), runtime, query, store=_store(runtime.revision))
        audit.record(db, "search", user=me(), detail={"query": query, "results": len(hits)})
        cards = _cards(db, hits)
    return render_template("search.html", query=query, cards=cards, blur_at=settings.blur_at)


@bp.get("/items/<item_id>/similar")
@login_required
def similar_page(item_id: str) -> Any:
    runtime = policy_runtime()
    settings = services().settings
    with transaction(services().sessions) as db:
        item = visible_item(db, me(), item_id)
        hits = search.similar(db, me(), _store(runtime.revision), item.id)
        audit.record(db, "similar", user=me(), item=item, detail={"results": len(hits)})
        cards = _cards(db, hits)
    return render_template(
        "search.html", query="", similar_to=item, cards=cards, blur_at=settings.blur_at
    )
