"""`/healthz` and `/readyz` for a worker process, on an optional port (HMA's liveness/readiness
split). Shared by both worker roles; kept apart from them so the delivery role, which never
loads the model, does not import torch to answer a health check."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    ready = False
    detail: dict[str, object] = {"status": "loading"}  # noqa: RUF012 - one instance per process


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body: dict[str, object]
            if self.path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif self.path == "/readyz":
                status, body = (200 if State.ready else 503), State.detail
            else:
                status, body = 404, {"error": {"code": "not_found", "message": self.path}}
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server
