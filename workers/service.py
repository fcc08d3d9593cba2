"""Start a worker process: load the model once, then consume the queue.

Readiness is explicit: the model, the database and the policy's prompt embeddings are ready
before the first message is taken, and an optional HTTP port answers `/healthz` (alive) and
`/readyz` (503 until all of that is true), after HMA's liveness/readiness split.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy.exc import IntegrityError

from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.policy import versions
from clipmod.queue import SCORE_QUEUE, make_celery, prepare_broker
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import sweeper
from workers.pipeline import Scorer
from workers.tasks import register

log = logging.getLogger(__name__)


class _State:
    ready = False
    detail: dict[str, object] = {"status": "loading"}  # noqa: RUF012 - one instance per process


def _serve_health(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body: dict[str, object]
            if self.path == "/healthz":
                status, body = 200, {"status": "ok"}
            elif self.path == "/readyz":
                status, body = (200 if _State.ready else 503), _State.detail
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


def seed_policy(settings: Settings, sessions: object) -> None:
    """Publish and activate CLIPMOD_POLICY if the database has no active version yet."""
    text = settings.policy.read_text(encoding="utf-8")
    try:
        with transaction(sessions) as session:  # type: ignore[arg-type]
            version = versions.ensure_seeded(session, text, source=str(settings.policy))
            log.info("active policy: %s", version.label)
    except IntegrityError:
        log.info("another process seeded the policy first")


def run(settings: Settings, health_port: int | None = None, loglevel: str = "INFO") -> None:
    if health_port:
        _serve_health(health_port)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    seed_policy(settings, sessions)
    runtime = ClipRuntime.load(settings.model, settings.device)
    scorer = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    with sessions() as session:
        active = versions.resolve(session, None)
        if active is not None:
            scorer.policies.bank(session, active.id)  # warm: the first batch pays no text pass
    app = make_celery(settings)
    prepare_broker(app)
    register(app, settings, lambda: scorer)
    sweeper.start(sessions, app, settings.stuck_after_s, settings.sweep_every_s)
    _State.ready = True
    _State.detail = {"status": "ready", "model": runtime.describe()}
    log.info("worker ready: %s", runtime.describe())
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            "--concurrency=1",
            f"--loglevel={loglevel}",
            "-Q",
            SCORE_QUEUE,
            "--without-gossip",
            "--without-mingle",
            "-n",
            "clipmod@%h",
        ]
    )
