"""The Celery task: a thin wrapper that turns broker messages into `Scorer.score_batch` calls."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from clipmod.queue import SCORE_TASK, enqueue_scoring
from clipmod.settings import Settings
from workers.batching import GatheringBatches
from workers.pipeline import Scorer

log = logging.getLogger(__name__)


def register(app: Celery, settings: Settings, get_scorer: Callable[[], Scorer]) -> None:
    @app.task(
        name=SCORE_TASK,
        base=GatheringBatches,
        acks_late=True,
        flush_every=settings.batch_size,
        flush_interval=settings.batch_wait_ms / 1000,
    )
    def score_items(requests: list) -> None:  # type: ignore[type-arg]
        ids = [r.args[0] for r in requests if r.args]
        requeue = get_scorer().score_batch(ids)
        if requeue:
            log.warning("requeueing %d items", len(requeue))
            enqueue_scoring(app, requeue)
