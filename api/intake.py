"""Turn a multipart or JSON upload into a validated `Upload`.

Both encodings end in the same pydantic model, so limits and messages are identical whichever a
platform uses.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from flask import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clipmod import images
from clipmod.errors import InvalidInput, PayloadTooLarge
from clipmod.settings import Settings

MAX_METADATA_BYTES = 16 * 1024


class UploadFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    image_base64: str | None = None

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


def _fields(data: dict[str, Any]) -> UploadFields:
    try:
        return UploadFields.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise InvalidInput(f"{field}: {message}") from None


def _from_multipart(request: Request) -> tuple[UploadFields, bytes | None]:
    form: dict[str, Any] = {k: v for k, v in request.form.items() if k in ("text", "external_id")}
    unknown = set(request.form) - {"text", "external_id", "metadata"}
    unknown |= set(request.files) - {"file"}
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]}: unknown field")
    if "metadata" in request.form:
        try:
            form["metadata"] = json.loads(request.form["metadata"])
        except json.JSONDecodeError:
            raise InvalidInput("metadata: must be a JSON object") from None
    upload = request.files.get("file")
    return _fields(form), (upload.read() if upload else None)


def _from_json(request: Request) -> tuple[UploadFields, bytes | None]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("body: must be a JSON object", code="invalid_json")
    fields = _fields(body)
    image = None
    if fields.image_base64 is not None:
        try:
            image = base64.b64decode(fields.image_base64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("image_base64: not valid base64") from None
    return fields, image


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
    text = fields.text if fields.text and fields.text.strip() else None
    if text is not None and len(text) > settings.max_text_chars:
        raise PayloadTooLarge(
            f"text is {len(text)} characters; the limit is {settings.max_text_chars}",
            code="text_too_long",
        )
    if image is not None and len(image) == 0:
        image = None
    if image is not None and len(image) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"image is {len(image)} bytes; the limit is {settings.max_upload_bytes}",
            code="image_too_large",
        )
    if text is None and image is None:
        raise InvalidInput(
            "nothing to score: send a `file`/`image_base64` and/or a non-empty `text`",
            code="nothing_to_score",
        )
    info = images.inspect(image, images.ImageLimits.from_settings(settings)) if image else None
    return Upload(text, fields.external_id, fields.metadata, image, info)
