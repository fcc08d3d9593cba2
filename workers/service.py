"""Start a worker process: load the model once, then consume the queue.

Readiness is live (see `workers.health`): the model is loaded, the database and the broker
answer, and the active policy was checked recently. Besides the Celery consumer, the process
runs two small threads: the heartbeat, which renews the leases on the items it is scoring and
checks for a newly activated policy even while idle, and the reconciler (`workers.sweeper`).
"""

from __future__ import annotations

import logging
import threading

import torch
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from threadpoolctl import threadpool_limits

from clipmod import outbox
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.errors import ClipmodError
from clipmod.policy import versions
from clipmod.queue import SCORE_QUEUE, enqueue_scoring, make_celery, prepare_broker
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import health, store, sweeper
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


def heartbeat_interval(settings: Settings) -> float:
    """Often enough to renew a lease twice before it runs out, and to notice a new policy."""
    return max(0.2, min(settings.lease_s / 3, max(settings.policy_refresh_s, 0.5)))


def start_heartbeat(
    scorer: Scorer, sessions: sessionmaker[Session], settings: Settings
) -> threading.Event:
    stop = threading.Event()
    every = heartbeat_interval(settings)

    def loop() -> None:
        while not stop.wait(every):
            try:
                with transaction(sessions) as session:
                    store.renew(session, scorer.worker_id, settings.lease_s)
                    scorer.policies.refresh(session)
            except Exception as exc:
                log.warning("heartbeat failed (%s)", str(exc).splitlines()[0][:200])

    threading.Thread(target=loop, name="heartbeat", daemon=True).start()
    return stop


def limit_host_threads() -> None:
    """One thread each for BLAS, OpenMP and torch's CPU ops, in a worker whose model is on a GPU.

    There the host does no heavy arithmetic: a batch's verdicts are one small product against
    the prompt bank, and the pixels' copy. But each such call woke a pool of one thread per
    core, and the pool busy-waited after it: on a 16-core H200 machine the worker burnt 5.9-6.6
    ms of CPU an image, ~14 cores spinning beside the threads that hold the GIL. With one
    thread each: 0.42 ms an image, and 2,712 -> 3,360 images/s end to end (same run, ViT-B/32,
    Redis + PostgreSQL; README "Benchmarks"). A CPU worker keeps its threads: there torch's
    own pool runs the forward pass.
    """
    threadpool_limits(limits=1)
    torch.set_num_threads(1)


def run(settings: Settings, health_port: int | None = None, loglevel: str = "INFO") -> None:
    every = heartbeat_interval(settings)
    state = health.WorkerState(policy_stale_s=max(10.0, 5 * every, 3 * settings.policy_refresh_s))
    if health_port:
        health.serve(state, health_port, settings.health_host)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    outbox.install(sessions)  # verdicts owe their callbacks in the same transaction
    seed_policy(settings, sessions)
    runtime = ClipRuntime.load(settings.model, settings.device)
    if runtime.device.type == "cuda":
        limit_host_threads()
    scorer = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    scorer.warm()
    with sessions() as session:
        active = versions.resolve(session, None)
        if active is not None:
            scorer.policies.bank(session, active.id)  # warm: the first batch pays no text pass
        scorer.policies.refresh(session)
    app = make_celery(settings)
    prepare_broker(app)
    register(app, settings, lambda: scorer)
    start_heartbeat(scorer, sessions, settings)
    sweeper.start(sessions, app, settings.stuck_after_s, settings.sweep_every_s)
    state.engine, state.celery = engine, app
    state.policy_checked = lambda: scorer.policies.refreshed_at
    state.model = runtime.describe()
    state.started = True
    log.info("worker %s ready: %s", scorer.worker_id, runtime.describe())
    try:
        # A wake-up for itself: what was queued while no worker ran is claimed now, not at the
        # reconciler's first pass (which would send one too).
        enqueue_scoring(app, [], force=True)
    except ClipmodError:
        log.warning("could not send the start-up wake-up; the reconciler will")
    # `--quiet` (a `celery` option, so before `worker`): no ASCII-art banner in production logs.
    app.worker_main(
        [
            "--quiet",
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
