"""The reconciler: the database is the source of truth, the broker is brought back in line with it.

Every worker runs one, every `sweep_every_s` seconds. Each pass:

1. re-queues `processing` items whose lease ran out: their worker died (a live worker renews
   its leases, see `workers.store.renew`). An item that has used up its attempts this way is
   failed with `scoring_error` instead, so an input that kills workers cannot loop forever;
2. re-sends `queued` items the broker has no message for. A message can be lost on the
   embedded SQLite broker (a SIGKILLed worker's taken messages), on Redis without AOF (a
   restart empties it), or never sent (the API died between its commit and the send). The
   broker cannot be asked "do you hold item X", so the pass compares counts: queued items
   minus messages waiting is the number missing, and that many of the oldest queued items
   that have waited longer than `stuck_after_s` are sent again. A surplus guess only costs a
   duplicate message, which the conditional claim turns into a no-op. On Redis, where a
   message is a wake-up and a woken worker claims every queued item (`clipmod.queue`), counts
   say nothing: any queued item older than `stuck_after_s` sends one wake-up.

Several workers may reconcile at once: each takes an item with a conditional UPDATE (status
and age re-checked), so exactly one of them re-sends it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.models import Item, ItemStatus, utcnow
from clipmod.queue import broker_backlog, doorbell, enqueue_scoring
from workers import metrics
from workers.store import MAX_ATTEMPTS, requeue_or_fail

log = logging.getLogger(__name__)


@dataclass
class Pass:
    """What one reconcile pass did (the ids it re-sent, by reason)."""

    expired: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: int = 0


def _expired_leases(session: Session) -> tuple[list[str], int]:
    now = utcnow()
    expired = and_(
        Item.status == ItemStatus.PROCESSING,
        or_(Item.lease_until.is_(None), Item.lease_until < now),
    )
    back, dead = requeue_or_fail(
        session, expired, f"the worker scoring it died {MAX_ATTEMPTS} times; see worker logs"
    )
    return back, len(dead)


def _missing(
    session: Session, in_broker: int | None, stuck_after_s: float, limit: int
) -> list[str]:
    """Up to `limit` queued items older than the grace, `in_broker` short of the queued count;
    with `in_broker` None (wake-up messages) one such item stands for all."""
    queued, oldest = session.execute(
        select(func.count(Item.id), func.min(Item.created_at)).where(
            Item.status == ItemStatus.QUEUED
        )
    ).one()
    metrics.QUEUE_DEPTH.set(queued)
    if in_broker is not None:
        metrics.BROKER_MESSAGES.set(in_broker)
    if oldest is not None:
        # SQLite hands back naive datetimes; every stamp we write is UTC.
        age = utcnow().replace(tzinfo=None) - oldest.replace(tzinfo=None)
        metrics.OLDEST_QUEUED.set(max(age.total_seconds(), 0.0))
    else:
        metrics.OLDEST_QUEUED.set(0)
    deficit = min(queued - in_broker, limit) if in_broker is not None else min(queued, 1)
    if deficit <= 0:
        return []
    cutoff = utcnow() - timedelta(seconds=stuck_after_s)
    old = and_(Item.status == ItemStatus.QUEUED, Item.updated_at < cutoff)
    candidates = session.scalars(
        select(Item.id).where(old).order_by(Item.updated_at).limit(deficit)
    ).all()
    if not candidates:
        return []
    # Moving `updated_at` forward is the claim: another reconciler's UPDATE finds it too young.
    return list(
        session.scalars(
            update(Item)
            .where(Item.id.in_(candidates), old)
            .values(updated_at=utcnow())
            .returning(Item.id)
            .execution_options(synchronize_session=False)
        )
    )


def reconcile(
    sessions: sessionmaker[Session], app: Celery, stuck_after_s: float, limit: int = 1000
) -> Pass:
    done = Pass()
    with transaction(sessions) as session:
        done.expired, done.failed = _expired_leases(session)
    if done.expired:
        log.warning("re-queueing %d items whose worker's lease expired", len(done.expired))
        enqueue_scoring(app, done.expired, force=True)
        metrics.REQUEUED.labels("lease_expired").inc(len(done.expired))
    if done.failed:
        metrics.FAILED.labels("scoring_error").inc(done.failed)
    in_broker = broker_backlog(app, recent_s=stuck_after_s)
    if doorbell(app) is not None:
        metrics.BROKER_MESSAGES.set(in_broker)
        with transaction(sessions) as session:
            done.missing = _missing(session, None, stuck_after_s, limit)
        if done.missing:
            log.warning("queued items waited over %.0f s; waking a worker", stuck_after_s)
    else:
        with transaction(sessions) as session:
            done.missing = _missing(session, in_broker, stuck_after_s, limit)
        if done.missing:
            log.warning(
                "re-queueing %d queued items the broker holds no message for (%d waiting there)",
                len(done.missing),
                in_broker,
            )
    if done.missing:
        enqueue_scoring(app, done.missing, force=True)
        metrics.REQUEUED.labels("missing").inc(len(done.missing))
    return done


class Reconciler:
    """Runs `reconcile` every `every_s` seconds in a daemon thread; remembers the last success."""

    def __init__(
        self, sessions: sessionmaker[Session], app: Celery, stuck_after_s: float, every_s: float
    ):
        self.sessions, self.app = sessions, app
        self.stuck_after_s, self.every_s = stuck_after_s, every_s
        self.stopped = threading.Event()
        self.last_ok: float | None = None

    def start(self) -> Reconciler:
        threading.Thread(target=self._loop, name="reconciler", daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                reconcile(self.sessions, self.app, self.stuck_after_s)
                self.last_ok = time.monotonic()
            except Exception as exc:
                log.warning("reconcile pass failed (%s); next in %.0f s", exc, self.every_s)


def start(
    sessions: sessionmaker[Session], app: Celery, stuck_after_s: float, every_s: float
) -> Reconciler:
    return Reconciler(sessions, app, stuck_after_s, every_s).start()
