"""The API's JSON shape for items (README "API"); the verdict's is shared with callbacks."""

from __future__ import annotations

from typing import Any

from flask import url_for

from clipmod.models import Item
from clipmod.views import error_view, input_view, iso, verdict_view


def item_json(item: Item, *, owner: bool = False) -> dict[str, Any]:
    """`owner`: the owning tenant asked for this one item, so its text and URL are echoed."""
    body: dict[str, Any] = {
        "id": item.id,
        "external_id": item.external_id,
        "status": str(item.status),
        "created_at": iso(item.created_at),
        "metadata": item.meta,
        "input": input_view(item),
        "verdict": verdict_view(item.verdict) if item.verdict is not None else None,
        "error": error_view(item),
        "links": {"self": url_for("items.get_item", item_id=item.id)},
    }
    if owner:
        body["text"] = item.text
        body["image_url"] = item.image_url
    return body
