"""Item images for signed-in people, never as stored bytes.

The stored blob is whatever a platform uploaded; served as-is, a crafted file could be sniffed
as HTML or script by a browser. So every image is decoded under the intake's pixel budget and
re-encoded by us (PNG, or JPEG for photos), with a Content-Type that matches what we wrote,
`nosniff`, and an inline Content-Disposition named after the item, never the blob path.
"""

from __future__ import annotations

import io
from typing import Any

from flask import Response, request
from flask_login import login_required

from api.dashboard.shell import bp, me
from api.services import services
from clipmod.errors import NotFound
from clipmod.images import ImageLimits, decode_rgb
from clipmod.review.access import visible_item

SIZES = {"thumb": 256, "full": 1024}


def render_image(
    data: bytes, source_format: str | None, size: int, limits: ImageLimits
) -> tuple[bytes, str]:
    img = decode_rgb(data, limits, target=size)
    img.thumbnail((size, size))
    out = io.BytesIO()
    if (source_format or "").lower() in ("jpeg", "jpg", "mpo", "webp"):
        img.save(out, format="JPEG", quality=88)
        return out.getvalue(), "jpeg"
    img.save(out, format="PNG", optimize=False)
    return out.getvalue(), "png"


@bp.get("/items/<item_id>/image")
@login_required
def item_image(item_id: str) -> Any:
    size_name = request.args.get("size", "full")
    size = SIZES.get(size_name, SIZES["full"])
    svc = services()
    with svc.sessions() as db:
        item = visible_item(db, me(), item_id)
        digest, fmt = item.image_sha256, item.image_format
    if digest is None:
        raise NotFound("this item has no image", code="no_image")
    try:
        data = svc.blobs.get(digest)
    except FileNotFoundError:
        raise NotFound("the image bytes are missing from storage", code="blob_missing") from None
    body, kind = render_image(data, fmt, size, ImageLimits.from_settings(svc.settings))
    resp = Response(body, mimetype=f"image/{kind}")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Disposition"] = f'inline; filename="{item.id}-{size_name}.{kind}"'
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp
