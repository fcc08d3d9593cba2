"""The worker's HTTP port: `/healthz`, `/readyz` from live state, and `/metrics`.

`/readyz` is recomputed on every request (HMA's `status()`): the model is loaded, the database
and the broker answer within a short deadline, and the active policy was checked recently.
It goes back to 503 when any of that stops being true, so an orchestrator sees a worker that
lost its database, not just one that once started. Like the API's, it names what failed and
nothing more (no hosts, no driver text: the port may be bound beyond loopback, by
`CLIPMOD_HEALTH_HOST`, for a scraper or an orchestrator's probe).

`/metrics` is Prometheus' text format for this process (see `workers.metrics`). This port is
the worker's internal port, like a separate metrics port, so it carries no API key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clipmod import probes
from workers import metrics

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


@dataclass
class WorkerState:
    """What readiness is computed from; `service.run` fills it in as the worker starts."""

    policy_stale_s: float = 30.0
    model: dict[str, Any] | None = None
    engine: Any = None
    celery: Any = None
    policy_checked: Any = None  # a callable returning the monotonic time of the last check;
    # None for the delivery role, which scores nothing and so holds no policy
    started: bool = False

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        if not self.started or self.model is None:
            return False, {"status": "loading"}
        checks = {
            "database": probes.database(self.engine, PROBE_TIMEOUT_S),
            "broker": probes.broker(self.celery, PROBE_TIMEOUT_S),
        }
        if self.policy_checked is not None:
            checked = self.policy_checked()
            checks["policy"] = (
                checked is not None and time.monotonic() - checked < self.policy_stale_s
            )
        failing = [name for name, ok in checks.items() if not ok]
        metrics.READY.set(0 if failing else 1)
        if failing:
            return False, {"status": "unavailable", "failing": failing}
        return True, {"status": "ready", "model": self.model}


def serve(state: WorkerState, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
                return
            body: dict[str, Any]
            if self.path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif self.path == "/readyz":
                ready, body = state.readiness()
                status = 200 if ready else 503
            else:
                status, body = 404, {"error": {"code": "not_found", "message": self.path}}
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    log.info("health and metrics on http://%s:%d (/healthz /readyz /metrics)", host, port)
    return server
