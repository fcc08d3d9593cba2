"""`/v1/items`: intake, lookup and the tenant's paged list."""

from __future__ import annotations

import json

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from api import limits
from api.auth import TenantRef, authenticate_request, requires
from api.intake import Upload, parse_upload
from api.newitems import NewItem, NewUpload
from api.params import decode_cursor, encode_cursor, page_limit
from api.serialize import item_json
from api.services import services
from clipmod import retention, retry
from clipmod.db import transaction
from clipmod.errors import ClipmodError, InvalidInput, NotFound
from clipmod.models import Action, Item, ItemStatus, Verdict, new_id
from clipmod.queue import enqueue_scoring

bp = Blueprint("items", __name__, url_prefix="/v1")
bp.before_request(authenticate_request)


def _existing(session: Session, tenant_id: int, external_id: str | None) -> Item | None:
    if external_id is None:
        return None
    return session.scalar(
        select(Item)
        .options(selectinload(Item.verdict).selectinload(Verdict.policy_version))
        .where(Item.tenant_id == tenant_id, Item.external_id == external_id)
    )


def _replay(item: Item, upload: Upload) -> tuple[Response, int]:
    """A repeated (tenant, external_id): answer the stored item, and re-queue it if still waiting.

    Re-queueing is safe (scoring is idempotent) and gives a client whose first attempt met a
    broker outage a way to recover by simply retrying. A retry must be the same request: new
    content under an old `external_id` would otherwise get the old content's verdict and never be
    scored, so it is a 409. Items stored before content hashes existed (NULL) cannot be compared
    and are answered as a replay, as they always were.
    """
    if item.status == ItemStatus.DELETED:
        raise ClipmodError(
            f"external_id {item.external_id!r} named item {item.id}, which was deleted; use a "
            "new external_id",
            code="item_deleted",
            status=409,
        )
    if item.content_hash is not None and item.content_hash != upload.content_hash:
        raise ClipmodError(
            f"external_id {item.external_id!r} already names item {item.id} with different "
            "content; use a new external_id for new content",
            code="external_id_conflict",
            status=409,
        )
    if item.status == ItemStatus.QUEUED:
        enqueue_scoring(services().celery, [item.id])
    return jsonify(item_json(item)), 200


@bp.post("/items")
@requires("items:write")
def create_item() -> tuple[Response, int]:
    limits.check_intake()
    return accept(g.tenant, parse_upload(request, services().settings))


def accept(tenant: TenantRef, upload: Upload) -> tuple[Response, int]:
    """Store an upload and queue it, or answer the item it repeats: the one intake path that
    `POST /v1/items` and the signed webhook share."""
    svc = services()
    info = upload.image_info
    # No look-up first: a new item (the common case) is one row of a batched INSERT, its blob
    # written by the same batch just before (`api.newitems`); a repeated external_id is found
    # when the insert skips it (below). A replay or a twin upload writes the same file again.
    for _ in range(2):
        item = NewItem(
            id=new_id(),
            tenant_id=tenant.id,
            external_id=upload.external_id,
            text=upload.text,
            metadata=upload.metadata,
            content_hash=upload.content_hash,
            image_sha256=upload.image_sha256,
            image_url=upload.image_url,
            image_format=info.format if info else None,
            image_width=info.width if info else None,
            image_height=info.height if info else None,
        )
        if svc.intake.submit(NewUpload(item, upload.image)):
            break
        # The external_id is taken: a retry of the same request (a replay), a concurrent
        # request that won the insert, or new content under an old id (a conflict).
        with svc.sessions() as session:
            found = _existing(session, tenant.id, upload.external_id)
        if found is not None:
            try:
                return _replay(found, upload)
            except ClipmodError as exc:
                if exc.status == 409:  # refused; a replay's bytes are the found item's own
                    _drop_blob(upload)
                raise
        # The row that held the id was purged in between: insert again, once.
    else:
        _drop_blob(upload)
        raise ClipmodError(
            f"external_id {upload.external_id!r} is changing hands; retry the request",
            code="external_id_busy",
            status=503,
        )
    return _accepted(item.id, upload.external_id)


def _accepted(item_id: str, external_id: str | None) -> tuple[Response, int]:
    """The 202 of an item queued (new, or retried). By hand, not `url_for` + `jsonify`: those
    two cost 0.02 ms of an upload's ~1.15 ms of server CPU (two interleaved runs of
    `bench.intake` against the same server patched). The path is `get_item`'s route; the API
    tests compare `links.self` with it."""
    body = {
        "id": item_id,
        "external_id": external_id,
        "status": "queued",
        "links": {"self": f"{request.script_root}/v1/items/{item_id}"},
    }
    return Response(json.dumps(body), mimetype="application/json"), 202


def _drop_blob(upload: Upload) -> None:
    """A refused upload's bytes, written before its row was refused, unless an item uses them."""
    digest = upload.image_sha256
    if digest is not None:
        svc = services()
        svc.blobs.remove_unless(digest, lambda: retention.blob_in_use(svc.sessions, digest))


def _gone(item_id: str) -> ClipmodError:
    return ClipmodError(f"item {item_id!r} was deleted", code="item_deleted", status=410)


@bp.get("/items/<item_id>")
@requires("items:read")
def get_item(item_id: str) -> Response:
    with services().sessions() as session:
        item = session.scalar(
            select(Item)
            .options(selectinload(Item.verdict).selectinload(Verdict.policy_version))
            .where(Item.id == item_id, Item.tenant_id == g.tenant.id)
        )
        if item is None:
            raise NotFound(f"no item {item_id!r}", code="item_not_found")
        if item.status == ItemStatus.DELETED:
            raise _gone(item_id)
        return jsonify(item_json(item, owner=True))


@bp.delete("/items/<item_id>")
@requires("items:delete")
def delete_item(item_id: str) -> Response:
    """204 once; then `410 item_deleted`, like every other request for a deleted item."""
    svc = services()
    outcome = retention.delete_item(svc.sessions, svc.blobs, item_id, tenant_id=g.tenant.id)
    if outcome == retention.Outcome.NOT_FOUND:
        raise NotFound(f"no item {item_id!r}", code="item_not_found")
    if outcome == retention.Outcome.ALREADY_DELETED:
        raise _gone(item_id)
    return Response(status=204)


@bp.post("/items/<item_id>/retry")
@requires("items:write")
def retry_item(item_id: str) -> tuple[Response, int]:
    """202 with the item queued again, when it failed (`clipmod.retry` says when that helps);
    `409 item_not_failed` otherwise: a queued, processing or scored item needs nothing."""
    svc = services()
    with transaction(svc.sessions) as session:
        item = session.scalar(select(Item).where(Item.id == item_id, Item.tenant_id == g.tenant.id))
        if item is None:
            raise NotFound(f"no item {item_id!r}", code="item_not_found")
        if item.status == ItemStatus.DELETED:
            raise _gone(item_id)
        if item.status != ItemStatus.FAILED:
            raise ClipmodError(
                f"item {item_id!r} is {item.status.value}, not failed: nothing to retry",
                code="item_not_failed",
                status=409,
            )
        external_id = item.external_id
        ids = retry.requeue(session, retry.FailedFilter(item_ids=[item_id]))
    retry.wake(svc.celery, ids)
    return _accepted(item_id, external_id)


def _choice(name: str, allowed: list[str]) -> str | None:
    value = request.args.get(name)
    if value is not None and value not in allowed:
        raise InvalidInput(f"{name}: must be one of {', '.join(allowed)}")
    return value


@bp.get("/items")
@requires("items:read")
def list_items() -> Response:
    status = _choice("status", [s.value for s in ItemStatus if s != ItemStatus.DELETED])
    action = _choice("action", [a.value for a in Action])
    limit = page_limit()
    query = (
        select(Item)
        .options(selectinload(Item.verdict).selectinload(Verdict.policy_version))
        .where(Item.tenant_id == g.tenant.id, Item.status != ItemStatus.DELETED)
        .order_by(Item.created_at.desc(), Item.id.desc())
        .limit(limit + 1)
    )
    if status:
        query = query.where(Item.status == ItemStatus(status))
    if action:
        query = query.join(Verdict, Verdict.item_id == Item.id).where(
            Verdict.action == Action(action)
        )
    if cursor := request.args.get("cursor"):
        created, last_id = decode_cursor(cursor)
        query = query.where(
            or_(Item.created_at < created, and_(Item.created_at == created, Item.id < last_id))
        )
    with services().sessions() as session:
        rows = list(session.scalars(query))
        page, more = rows[:limit], len(rows) > limit
        return jsonify(
            {
                "items": [item_json(i) for i in page],
                "next_cursor": (
                    encode_cursor(page[-1].created_at, page[-1].id) if more and page else None
                ),
            }
        )
