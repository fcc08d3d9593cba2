"""Errors with stable codes.

Platforms branch on `code`, never on `message`, so a code, once shipped, keeps its meaning.
The same codes appear in API responses and in an item's `error` when a worker gives up on it.
"""

from __future__ import annotations


class ClipmodError(Exception):
    """An expected failure that a client can act on."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class PayloadTooLarge(ClipmodError):
    code, status = "payload_too_large", 413


class UnsupportedMedia(ClipmodError):
    code, status = "unsupported_media_type", 415


class InvalidInput(ClipmodError):
    code, status = "invalid_input", 422


class NotFound(ClipmodError):
    code, status = "not_found", 404


class Unauthorized(ClipmodError):
    code, status = "unauthorized", 401


class StorageUnavailable(ClipmodError):
    """The blob store refused a write (a full disk, a lost volume): nothing the client sent is
    wrong, so it is a retryable 503, as a database outage is, never a 500."""

    code, status = "storage_unavailable", 503
