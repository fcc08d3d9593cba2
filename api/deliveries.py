"""`/v1/deliveries`: a tenant's callback log, one delivery's attempts, and redelivery."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import and_, or_, select

from api.auth import authenticate_request, requires
from api.params import decode_cursor, encode_cursor, page_limit
from api.services import services
from clipmod import deliveries
from clipmod.errors import InvalidInput
from clipmod.models import Delivery, DeliveryStatus

bp = Blueprint("deliveries", __name__, url_prefix="/v1/deliveries")
bp.before_request(authenticate_request)


@bp.get("")
@requires("deliveries:read")
def list_deliveries() -> Response:
    """Newest first; `status` filters (pending, succeeded, dead)."""
    limit = page_limit()
    query = (
        select(Delivery)
        .where(Delivery.tenant_id == g.tenant.id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(limit + 1)
    )
    status = request.args.get("status")
    if status is not None:
        if status not in [s.value for s in DeliveryStatus]:
            raise InvalidInput("status: must be one of pending, succeeded, dead")
        query = query.where(Delivery.status == DeliveryStatus(status))
    if cursor := request.args.get("cursor"):
        created, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Delivery.created_at < created,
                and_(Delivery.created_at == created, Delivery.id < last_id),
            )
        )
    with services().sessions() as session:
        rows = list(session.scalars(query))
    page, more = rows[:limit], len(rows) > limit
    return jsonify(
        {
            "deliveries": [deliveries.delivery_json(r) for r in page],
            "next_cursor": encode_cursor(page[-1].created_at, page[-1].id)
            if more and page
            else None,
        }
    )


@bp.get("/<delivery_id>")
@requires("deliveries:read")
def get_delivery(delivery_id: str) -> Response:
    with services().sessions() as session:
        row = deliveries.find(session, g.tenant.id, delivery_id)
        return jsonify(deliveries.delivery_json(row, deliveries.attempts_of(session, row.id)))


@bp.post("/<delivery_id>/redeliver")
@requires("deliveries:write")
def redeliver(delivery_id: str) -> tuple[Response, int]:
    """202: queued for the delivery workers' next dispatch (within `DELIVERY_POLL_S`)."""
    with services().sessions() as session, session.begin():
        row = deliveries.redeliver(session, g.tenant.id, delivery_id)
        return jsonify(deliveries.delivery_json(row)), 202
