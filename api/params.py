"""Reading request bodies and paging parameters the same way on every platform endpoint."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import TypeVar

from flask import request
from pydantic import BaseModel

from api.validation import check_fields, validate
from clipmod.errors import InvalidInput
from clipmod.models import as_utc

Body = TypeVar("Body", bound=BaseModel)
MAX_PAGE = 100


def json_body(model: type[Body], *, optional: bool = False) -> Body:
    """A JSON object validated by `model`; an empty body is `{}` when `optional`.

    Every string is checked storable (no NUL, no lone surrogate) and nesting is bounded before
    pydantic sees it: the same walk intake uses, so no JSON endpoint can reach the database
    with a value PostgreSQL would refuse (a 500) or recurse without bound.
    """
    data = request.get_json(silent=True)
    if data is None and optional and not request.get_data():
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput("body: must be a JSON object", code="invalid_json")
    check_fields(data)
    return validate(model, data)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([as_utc(created_at).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError):
        raise InvalidInput("cursor: not a cursor this API issued", code="invalid_cursor") from None


def page_limit(default: int = 50) -> int:
    try:
        return min(max(int(request.args.get("limit", default)), 1), MAX_PAGE)
    except ValueError:
        raise InvalidInput("limit: must be an integer") from None
