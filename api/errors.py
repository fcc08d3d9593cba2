"""Every error leaves the API as `{"error": {"code", "message"}}`: never HTML, never a traceback.

That holds for errors waitress answers itself, before Flask sees the request (`api.server`
uses `HTTP_CODES` and `error_body` from here, so both layers speak the same codes).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from clipmod.errors import ClipmodError

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}
BODY_TOO_LARGE = "request body is larger than the upload limit"
# Long enough for a database failover or restart; short enough that a client retries soon.
RETRY_AFTER_S = 5


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error_body(code, message)), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClipmodError)
    def _domain(exc: ClipmodError) -> tuple[Response, int]:
        response = jsonify(exc.to_dict())
        if exc.status == 503:  # every 503 (queue, storage, a busy external_id) says when
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response, exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = BODY_TOO_LARGE
        return error_response(status, HTTP_CODES.get(status, "http_error"), message)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    def _database(exc: Exception) -> tuple[Response, int]:
        """The database is down or unreachable: nothing the client sent is wrong, so retry.

        Caught here, once, because every handler (and the auth hook) reaches the database; a
        500 would tell a platform its request was bad and should not be retried.
        """
        log.error("database unavailable: %s", str(exc).splitlines()[0][:300])
        response, status = error_response(
            503, "database_unavailable", "the database is unavailable; retry shortly"
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the incident was logged")
