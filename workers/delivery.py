"""The delivery worker (`clipmod worker --role deliver`): callbacks and housekeeping.

It never loads the model and consumes only the delivery queue, so a receiver that is slow or
down costs scoring nothing. Two loops run in it:

- the dispatcher, every `CLIPMOD_DELIVERY_POLL_S`: claims due deliveries in the database and
  puts them on the delivery queue, where Celery's thread pool attempts them
  (`clipmod.deliveries.attempt`); the schedule of retries is rows, not broker countdowns;
- housekeeping: the retention purge every `CLIPMOD_RETENTION_EVERY_S`, and the blob sweep
  (`clipmod.blobsweep`) every `CLIPMOD_BLOB_SWEEP_EVERY_S`.

All are safe with several delivery workers running: every claim is a conditional UPDATE, and a
blob is removed only after a second look at the rows (`BlobStore.remove_unless`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from clipmod import blobsweep, deliveries, retention, secretbox
from clipmod.db import make_engine, make_sessionmaker
from clipmod.queue import (
    DELIVER_QUEUE,
    DELIVER_TASK,
    make_celery,
    prepare_broker,
    send_deliveries,
)
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import health
from workers.metrics import BLOBS_SWEPT

log = logging.getLogger(__name__)


def register(
    app: Celery,
    sessions: sessionmaker[Session],
    box: secretbox.SecretBox,
    rules: deliveries.DeliveryRules,
) -> None:
    @app.task(name=DELIVER_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def deliver(delivery_id: str, token: str) -> None:
        status = deliveries.attempt(sessions, box, rules, delivery_id, token)
        if status is not None:
            log.info("delivery %s: %s", delivery_id, status)


def every(seconds: float, name: str, job: Callable[[], object]) -> threading.Event:
    """Run `job` every `seconds` in a daemon thread, surviving its failures."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            try:
                job()
            except Exception:
                log.exception("%s failed; will retry", name)

    threading.Thread(target=loop, name=name, daemon=True).start()
    return stop


def dispatch_once(
    app: Celery, sessions: sessionmaker[Session], rules: deliveries.DeliveryRules
) -> int:
    claimed = deliveries.dispatch_due(sessions, rules.lease_s)
    if claimed:
        send_deliveries(app, claimed)
    return len(claimed)


def _sweep_blobs(sessions: sessionmaker[Session], blobs: BlobStore, grace_s: float) -> None:
    report = blobsweep.sweep(sessions, blobs, grace_s=grace_s)
    log.info("%s", report.line())
    # Orphans are a symptom (uploads refused after their bytes were stored, crashes), so an
    # operator can watch their rate.
    BLOBS_SWEPT.labels("unreferenced").inc(report.removed)
    BLOBS_SWEPT.labels("unfinished").inc(report.temp_removed)
    BLOBS_SWEPT.labels("aside").inc(report.aside_removed)


def run(settings: Settings, health_port: int | None = None, loglevel: str = "INFO") -> None:
    state = health.WorkerState()
    if health_port:
        health.serve(state, health_port, settings.health_host)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    box = secretbox.load(settings)
    rules = deliveries.DeliveryRules.from_settings(settings)
    blobs = BlobStore(settings.blob_dir)
    app = make_celery(settings)
    app.conf.worker_prefetch_multiplier = 4
    prepare_broker(app)
    register(app, sessions, box, rules)
    every(settings.delivery_poll_s, "dispatcher", lambda: dispatch_once(app, sessions, rules))
    if settings.retention_days:
        every(
            settings.retention_every_s,
            "retention",
            lambda: retention.purge_expired(sessions, blobs, settings.retention_days),
        )
    if settings.blob_sweep_every_s:
        every(
            settings.blob_sweep_every_s,
            "blob sweep",
            lambda: _sweep_blobs(sessions, blobs, settings.blob_sweep_grace_s),
        )
    state.engine, state.celery = engine, app
    state.model = {"role": "deliver"}  # no model to load: ready once connected
    state.started = True
    log.info("delivery worker ready")
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.delivery_concurrency}",
            f"--loglevel={loglevel}",
            "-Q",
            DELIVER_QUEUE,
            "--without-gossip",
            "--without-mingle",
            "-n",
            "clipmod-deliver@%h",
        ]
    )
