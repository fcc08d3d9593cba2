"""Start a worker process: load the model once, then consume the queue.

Readiness is explicit: the model, the database and the policy's prompt embeddings are ready
before the first message is taken, and an optional HTTP port answers `/healthz` (alive) and
`/readyz` (503 until all of that is true), after HMA's liveness/readiness split.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from clipmod import outbox
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.policy import versions
from clipmod.queue import SCORE_QUEUE, make_celery, prepare_broker
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import sweeper
from workers.health import State as _State
from workers.health import serve as _serve_health
from workers.pipeline import Scorer
from workers.tasks import register

log = logging.getLogger(__name__)


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
    outbox.install(sessions)  # verdicts owe their callbacks in the same transaction
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
