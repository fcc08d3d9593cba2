"""Liveness and readiness; the only unauthenticated endpoints.

`/healthz` answers while the process lives (restart me if not); `/readyz` answers 503 until the
database and the broker answer (route no traffic to me yet).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from api.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def check_database() -> str | None:
    try:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return f"database: {type(exc).__name__}: {exc}"[:300]
    return None


def check_broker() -> str | None:
    try:
        with services().celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        return f"broker: {type(exc).__name__}: {exc}"[:300]
    return None


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    problems = [p for p in (check_database(), check_broker()) if p]
    if problems:
        return jsonify({"status": "unavailable", "problems": problems}), 503
    return jsonify({"status": "ready"}), 200
