"""The Celery task: a thin wrapper that turns broker messages into `overlap.score_queued` calls.

A message wakes the worker; the worker then claims from the database, the items the messages
name first and then the oldest queued ones, a full batch at a time, until the queue is empty
or the call's budget is spent (see `clipmod.queue` for why a message is a wake-up).

Its return value is the acknowledgement decision (see `workers.batching`): True when every
item was finished or handed back to the queue (the call returns only after its last write has
ended); False when a batch could not even be claimed or handed back (typically the database is
down), after a short backoff so a redelivery loop stays slow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery

from clipmod.queue import SCORE_TASK, answer_bell, enqueue_scoring
from clipmod.settings import Settings
from workers.batching import GatheringBatches
from workers.overlap import score_queued
from workers.pipeline import Scorer

log = logging.getLogger(__name__)

# Seconds one task call keeps claiming: long enough that a wake-up message per this many
# seconds costs nothing, short enough for a prompt ack and a warm shutdown under a backlog.
SCORE_BUDGET_S = 2.0


class Backoff:
    """Exponential pause after consecutive failed batches: 0.5 s doubling to `ceiling` s."""

    def __init__(self, first: float = 0.5, ceiling: float = 8.0):
        self.first, self.ceiling, self.failures = first, ceiling, 0

    def delay(self) -> float:
        return float(min(self.ceiling, self.first * 2**self.failures))

    def wait(self) -> None:
        time.sleep(self.delay())
        self.failures += 1

    def reset(self) -> None:
        self.failures = 0


def register(app: Celery, settings: Settings, get_scorer: Callable[[], Scorer]) -> None:
    backoff = Backoff()
    ahead = ThreadPoolExecutor(1, thread_name_prefix="claim-ahead")
    writer = ThreadPoolExecutor(1, thread_name_prefix="write-behind")

    @app.task(
        name=SCORE_TASK,
        base=GatheringBatches,
        acks_late=True,
        flush_every=settings.batch_size,
        flush_interval=settings.batch_wait_ms / 1000,
    )
    def score_items(requests: list[Any]) -> bool:
        # A duplicate delivery (a client retry re-queues its item) is one item, not two.
        ids = list(dict.fromkeys(r.args[0] for r in requests if r.args))
        try:
            requeue, more = score_queued(
                get_scorer(), ids, lambda: answer_bell(app), SCORE_BUDGET_S, ahead, writer
            )
            if requeue:
                log.warning("requeueing %d items", len(requeue))
                enqueue_scoring(app, requeue, force=True)
            elif more:
                enqueue_scoring(app, [], force=True)  # the budget ran out: wake a worker again
        except Exception:
            log.exception("batch of %d not finished; its messages go back to the broker", len(ids))
            backoff.wait()
            return False
        backoff.reset()
        return True
