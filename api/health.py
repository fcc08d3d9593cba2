"""Liveness and readiness; the only unauthenticated endpoints.

`/healthz` answers while the process lives (restart me if not); `/readyz` checks the database
and the broker on every request, each within a short deadline (route no traffic to me while
either is gone, and again as soon as both are back). Being unauthenticated, `/readyz` names
what failed and nothing more: the driver's error text (hosts, ports, user names) goes to the
log, not to whoever asks.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.services import services
from clipmod import probes

bp = Blueprint("health", __name__)

PROBE_TIMEOUT_S = 2.0


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks = {
        "database": probes.database(svc.engine, PROBE_TIMEOUT_S),
        "broker": probes.broker(svc.celery, PROBE_TIMEOUT_S),
    }
    failing = [name for name, ok in checks.items() if not ok]
    if failing:
        return jsonify({"status": "unavailable", "failing": failing}), 503
    return jsonify({"status": "ready"}), 200
