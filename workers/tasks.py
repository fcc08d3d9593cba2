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
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery

from clipmod.queue import SCORE_TASK, answer_bell, enqueue_scoring, wake_another
from clipmod.settings import Settings
from workers.batching import GatheringBatches
from workers.overlap import score_queued
from workers.pipeline import Scorer

log = logging.getLogger(__name__)

# How often at most a worker rings for another after a full claim (`Spread`).
SPREAD_EVERY_S = 0.25


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


class Spread:
    """After a full claim, wake one more worker (`clipmod.queue.wake_another`), at most once
    per `every_s`.

    Why repeat it at all: a wake-up may be taken by a busy worker's own consumer (it prefetches)
    instead of an idle worker, and then waits in that worker's buffer; the next ring, a quarter
    of a second later, tries again. Why not at every batch: on a GPU a worker claims tens of
    batches a second, and each message costs a consumer about a millisecond of CPU.
    """

    def __init__(self, ring: Callable[[], object], every_s: float = SPREAD_EVERY_S):
        self.ring, self.every_s = ring, every_s
        self._last = -every_s
        self._lock = threading.Lock()

    def __call__(self) -> None:
        now = time.monotonic()
        with self._lock:  # the claim ahead runs in its own thread
            if now - self._last < self.every_s:
                return
            self._last = now
        self.ring()


def register(app: Celery, settings: Settings, get_scorer: Callable[[], Scorer]) -> None:
    backoff = Backoff()
    spread = Spread(lambda: wake_another(app))
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
                get_scorer(),
                ids,
                lambda: answer_bell(app),
                settings.score_budget_s,
                ahead,
                writer,
                on_full=spread,
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
