"""The pure checks that stand between hostile bytes and anything recursive, the database or disk.

A moderation service's inputs are chosen by adversaries, so every check here is bounded in time
and stack: JSON is parsed by the C scanner (which stops itself with `RecursionError`, caught
here) and then walked iteratively, so a 5,000-deep `metadata` costs a 422, not a thread's stack.
Strings are refused when PostgreSQL (NUL) or any UTF-8 encoder (lone surrogates) would refuse
them later, because a refusal after the blob is written leaves an orphan on disk and a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import unicodedata
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from clipmod.errors import InvalidInput

Model = TypeVar("Model", bound=BaseModel)

# How deep a field's value may nest (`{"a": {"b": 1}}` is 2 levels). Real metadata is shallow;
# the bound keeps every later recursive step (pydantic, json.dumps, the database driver) safe.
MAX_JSON_DEPTH = 16
# More values than this cannot fit in `metadata`'s byte limit anyway (each costs >= 1 byte), so
# the walk stops early instead of spending seconds on a 14 MB array before refusing it.
MAX_JSON_VALUES = 16 * 1024

# NUL: PostgreSQL text cannot hold it. U+D800-U+DFFF: only reachable through a JSON `\ud800`
# escape, and no UTF-8 encoder (the database driver's included) can write it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_DATA_URI = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
_LINE_BREAKS = str.maketrans("", "", "\r\n")


class JSONRefused(ValueError):
    """Raised for JSON that parses in Python but that we refuse to accept (depth, NaN)."""


def _refuse_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999 parses to inf, which PostgreSQL's JSON refuses
        raise JSONRefused(f"{literal[:32]} is out of range")
    return value


def loads_strict(raw: str | bytes) -> Any:
    """`json.loads` minus its Python extensions: no NaN/Infinity, no overflow to infinity.

    Deep nesting ends in `JSONRefused` (a `ValueError`) rather than `RecursionError`, so every
    caller that already handles malformed JSON handles this too (Flask's `get_json` included,
    through `StrictJSONProvider`).
    """
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise JSONRefused("nested too deeply") from None


def parse_json(raw: str | bytes, field: str) -> Any:
    """`loads_strict` with the API's error: 422 `invalid_json` naming the field."""
    try:
        return loads_strict(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, JSONRefused
        raise InvalidInput(f"{field}: not valid JSON ({exc})", code="invalid_json") from None


def check_string(field: str, value: str) -> None:
    """Refuse what PostgreSQL or a UTF-8 encoder would refuse after we have written the blob."""
    bad = _UNSTORABLE.search(value)
    if bad is None:
        return
    char = bad.group()
    what = "a NUL character" if char == "\x00" else "an unpaired surrogate"
    raise InvalidInput(f"{field}: contains {what} (U+{ord(char):04X}); send valid UTF-8 text")


def check_fields(body: dict[str, Any]) -> None:
    """Walk a request's fields iteratively: bounded depth and size, only storable strings.

    Errors name the top-level field the problem is in. Depth errors are `invalid_json` (the
    shape of the document is refused); bad characters are `invalid_input`.
    """
    stack: list[tuple[str, Any, int]] = []
    for key, value in body.items():
        check_string("body", key)
        stack.append((key, value, 0))
    counts: dict[str, int] = {}
    while stack:
        field, value, depth = stack.pop()
        counts[field] = counts.get(field, 0) + 1
        if counts[field] > MAX_JSON_VALUES:
            raise InvalidInput(f"{field}: more than {MAX_JSON_VALUES} JSON values")
        if isinstance(value, str):
            check_string(field, value)
        elif isinstance(value, dict | list):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(
                    f"{field}: nested more than {MAX_JSON_DEPTH} levels deep", code="invalid_json"
                )
            if isinstance(value, dict):
                for key, child in value.items():
                    check_string(field, key)
                    stack.append((field, child, depth))
            else:
                stack.extend((field, child, depth) for child in value)


def is_blank(text: str) -> bool:
    """Whitespace and format characters (Cf: zero-width space, joiners, BOM, bidi marks).

    Text made only of those renders as nothing, so scoring it would judge an invisible post.
    Callers bound the length first: this walks the whole string in the worst case.
    """
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def decode_base64(value: str) -> bytes:
    """Standard base64, as `base64` prints it (wrapped lines) or as a `data:image/...` URI.

    Anything else is still refused: spaces, URL-safe characters, missing padding.
    """
    prefix = _DATA_URI.match(value)
    if prefix is not None:
        value = value[prefix.end() :]
    try:
        return base64.b64decode(value.translate(_LINE_BREAKS), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64: not valid base64") from None


def content_hash(text: str | None, image_sha256: str | None, metadata: Any) -> str:
    """What an item says, as one sha256, so a reused `external_id` can be told apart.

    The canonical encoding is sorted-key, compact, ASCII JSON with a version tag: stable across
    Python versions and dict orders, and changeable later without old hashes colliding.
    """
    canonical = json.dumps(
        {"v": 1, "text": text, "image_sha256": image_sha256, "metadata": metadata},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def validate(model: type[Model], data: dict[str, Any]) -> Model:
    """A request schema from a parsed body; pydantic's first complaint becomes one 422 line,
    `field: message`, the same shape on every endpoint."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise InvalidInput(f"{field}: {message}") from None
