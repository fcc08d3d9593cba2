"""Turn a multipart or JSON upload into a validated `Upload`.

Both encodings end in the same checks and the same pydantic model, so limits and messages are
identical whichever a platform uses. Everything is checked here, before the handler touches the
blob store or the database: a request refused later would leave an orphan blob behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from flask import Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import multipart
from api.validation import (
    check_fields,
    content_hash,
    decode_base64,
    is_blank,
    parse_json,
    validate,
)
from clipmod import images, netguard, storage
from clipmod.errors import InvalidInput, PayloadTooLarge
from clipmod.settings import Settings

MAX_METADATA_BYTES = 16 * 1024
_FORM_FIELDS = multipart.TEXT_FIELDS


class UploadFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    image_base64: str | None = None
    image_url: str | None = Field(default=None, min_length=1, max_length=netguard.MAX_URL_CHARS)

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
        return value


@dataclass(frozen=True)
class Upload:
    text: str | None
    external_id: str | None
    metadata: dict[str, Any] | None
    image: bytes | None
    image_info: images.ImageInfo | None
    image_url: str | None = None

    @cached_property
    def image_sha256(self) -> str | None:
        """The blob's address, known before the blob is written (see `api.newitems`)."""
        return storage.address(self.image) if self.image is not None else None

    @cached_property
    def content_hash(self) -> str:
        # A URL item hashes its URL where an upload hashes its bytes ("url:" cannot collide
        # with a hex digest): the same request again is a replay, another URL a conflict.
        image = self.image_sha256 or (f"url:{self.image_url}" if self.image_url else None)
        return content_hash(self.text, image, self.metadata)


def _fields(data: dict[str, Any]) -> UploadFields:
    check_fields(data)  # iterative: before pydantic or json.dumps can recurse
    return validate(UploadFields, data)


def _from_multipart(request: Request) -> tuple[UploadFields, bytes | None]:
    simple = None
    boundary = request.mimetype_params.get("boundary")
    if boundary:
        simple = multipart.parse(request.get_data(), boundary)  # cached for werkzeug below
    form, image = simple if simple is not None else _werkzeug_form(request)
    data: dict[str, Any] = {
        k: v for k, v in form.items() if k in ("text", "external_id", "image_url")
    }
    if "metadata" in form:
        data["metadata"] = parse_json(form["metadata"], "metadata")
    return _fields(data), image


def _werkzeug_form(request: Request) -> tuple[dict[str, str], bytes | None]:
    """Any multipart body `api.multipart` does not take, with every check and error."""
    try:  # our request class parses strictly (see `api.app.ApiRequest`)
        form, files = request.form, request.files
    except ValueError as exc:
        raise InvalidInput(
            f"body: malformed multipart/form-data ({exc})", code="malformed_body", status=400
        ) from None
    names = [*form.keys(), *files.keys()]
    if not all(names):
        raise InvalidInput(
            "multipart part without a name: every part needs `Content-Disposition: form-data; "
            'name="..."`'
        )
    if "file" in form:
        raise InvalidInput('file: send the image as a file part (with a `filename="..."`)')
    unknown = set(form) - set(_FORM_FIELDS)
    unknown |= set(files) - {"file"}
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]}: unknown field")
    for name in [*_FORM_FIELDS, multipart.FILE_FIELD]:
        if len(form.getlist(name)) + len(files.getlist(name)) > 1:
            raise InvalidInput(f"{name}: sent more than once; send at most one")
    upload = files.get("file")
    return dict(form.items()), (upload.read() if upload else None)


def _from_json(request: Request) -> tuple[UploadFields, bytes | None]:
    body = parse_json(request.get_data(), "body")
    if not isinstance(body, dict):
        raise InvalidInput("body: must be a JSON object", code="invalid_json")
    fields = _fields(body)
    image = decode_base64(fields.image_base64) if fields.image_base64 is not None else None
    return fields, image


def _text(value: str | None, settings: Settings) -> str | None:
    """The text to score, or None when there is nothing visible to score."""
    if value is None:
        return None
    # The length first: it bounds the character walk in `is_blank`.
    if len(value) > settings.max_text_chars:
        if not value.strip():
            return None
        raise PayloadTooLarge(
            f"text is {len(value)} characters; the limit is {settings.max_text_chars}",
            code="text_too_long",
        )
    return None if is_blank(value) else value


def parse_upload(request: Request, settings: Settings) -> Upload:
    if request.mimetype == "multipart/form-data":
        fields, image = _from_multipart(request)
    elif request.is_json:
        fields, image = _from_json(request)
    else:
        raise InvalidInput(
            f"send multipart/form-data or application/json, not {request.mimetype or 'nothing'}",
            code="unsupported_content_type",
            status=415,
        )
    text = _text(fields.text, settings)
    if image is not None and len(image) == 0:
        image = None
    if image is not None and len(image) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"image is {len(image)} bytes; the limit is {settings.max_upload_bytes}",
            code="image_too_large",
        )
    url = fields.image_url
    if url is not None:
        if image is not None:
            raise InvalidInput("image_url: send an image or an image_url, not both")
        netguard.parse_url(url)  # syntax and scheme now; addresses when a worker fetches it
    if text is None and image is None and url is None:
        raise InvalidInput(
            "nothing to score: send a `file`/`image_base64`/`image_url` and/or a non-empty `text`",
            code="nothing_to_score",
        )
    info = images.inspect(image, images.ImageLimits.from_settings(settings)) if image else None
    return Upload(text, fields.external_id, fields.metadata, image, info, url)
