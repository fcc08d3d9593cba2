"""`/v1/items/<id>/decisions`: the platform tells us what its own moderators decided.

These decisions are the same rows the dashboard writes (`clipmod.review.decisions`), so
`policy suggest` and backtest precision/recall learn from a platform's moderators as well as
from ours, and the item leaves our review queue once the platform has ruled on it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import authenticate_request, requires
from api.params import json_body
from api.services import services
from clipmod.db import transaction
from clipmod.errors import ClipmodError, NotFound
from clipmod.models import Decision, DecisionAction, Item, ItemStatus
from clipmod.review import decisions

bp = Blueprint("decisions", __name__, url_prefix="/v1")
bp.before_request(authenticate_request)


class DecisionBody(BaseModel):
    """What the platform's moderator decided about an item."""

    model_config = ConfigDict(extra="forbid")

    action: DecisionAction = Field(
        description="allow (keep it), remove (take it down) or escalate (needs a senior look)"
    )
    moderator: str = Field(
        min_length=1, max_length=64, description="who decided, in the platform's own terms"
    )
    labels: dict[str, bool] | None = Field(
        default=None,
        description="per category: was it a violation? Omitted: follows from the action",
    )
    reason: str | None = Field(default=None, max_length=decisions.MAX_REASON_CHARS)


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "id": d.id,
        "action": d.action.value,
        "labels": d.labels,
        "reason": d.reason,
        "moderator": d.moderator,
        "source": d.source,
        "decided_at": d.decided_at.isoformat(),
        "answered": {"verdict_action": d.verdict_action, "policy_version_id": d.policy_version_id},
        "supersedes": d.supersedes_id,
    }


def _own_item(session: Session, item_id: str) -> Item:
    item = session.scalar(select(Item).where(Item.id == item_id, Item.tenant_id == g.tenant.id))
    if item is None:
        raise NotFound(f"no item {item_id!r}", code="item_not_found")
    if item.status == ItemStatus.DELETED:
        raise ClipmodError(f"item {item_id!r} was deleted", code="item_deleted", status=410)
    return item


@bp.post("/items/<item_id>/decisions")
@requires("items:write")
def record_decision(item_id: str) -> tuple[Response, int]:
    fields = json_body(DecisionBody)
    with transaction(services().sessions) as session:
        item = _own_item(session, item_id)
        decision = decisions.record_platform_decision(
            session,
            item,
            decisions.DecisionRequest(fields.action, fields.labels, fields.reason),
            tenant=g.tenant.name,
            moderator=fields.moderator,
        )
        return jsonify(decision_json(decision)), 201


@bp.get("/items/<item_id>/decisions")
@requires("items:read")
def list_decisions(item_id: str) -> Response:
    with services().sessions() as session:
        item = _own_item(session, item_id)
        return jsonify(
            {"decisions": [decision_json(d) for d in decisions.history(session, item.id)]}
        )
