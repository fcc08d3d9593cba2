"""Re-queue items that a lost message left waiting.

acks_late covers a worker that dies mid-batch on Redis (the message comes back after the
visibility timeout) and a worker that shuts down cleanly on any broker. It does not cover a
SIGKILLed worker on the embedded SQLite broker, whose taken messages are gone, nor an item whose
enqueue failed after its commit. This sweeper does: any item still `queued` or `processing`
after `stuck_after_s` is sent again. Several workers may sweep at once: each claims an item by
moving its `updated_at` forward in a conditional UPDATE, so only one of them re-sends it, and a
duplicate send would be harmless anyway (scoring is idempotent).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from clipmod.db import transaction
from clipmod.models import Item, ItemStatus, utcnow
from clipmod.queue import enqueue_scoring

log = logging.getLogger(__name__)


def requeue_stuck(
    sessions: sessionmaker[Session], app: Celery, stuck_after_s: float, limit: int = 1000
) -> list[str]:
    cutoff = utcnow() - timedelta(seconds=stuck_after_s)
    waiting = [ItemStatus.QUEUED, ItemStatus.PROCESSING]
    with transaction(sessions) as session:
        candidates = session.scalars(
            select(Item.id)
            .where(Item.status.in_(waiting), Item.updated_at < cutoff)
            .order_by(Item.updated_at)
            .limit(limit)
        ).all()
        claimed = []
        for item_id in candidates:
            moved = session.execute(
                update(Item)
                .where(Item.id == item_id, Item.status.in_(waiting), Item.updated_at < cutoff)
                .values(status=ItemStatus.QUEUED, updated_at=utcnow())
            )
            if moved.rowcount:  # type: ignore[attr-defined]
                claimed.append(item_id)
    if claimed:
        log.warning("re-queueing %d items waiting longer than %.0f s", len(claimed), stuck_after_s)
        enqueue_scoring(app, claimed)
    return claimed


def start(
    sessions: sessionmaker[Session], app: Celery, stuck_after_s: float, every_s: float
) -> threading.Event:
    """Sweep every `every_s` seconds in a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                requeue_stuck(sessions, app, stuck_after_s)
            except Exception:
                log.exception("sweep failed; will retry")

    threading.Thread(target=loop, name="sweeper", daemon=True).start()
    return stop
