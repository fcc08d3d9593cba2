"""What one task call does: claim and score queued items, batch after batch, overlapped.

While batch N is on the model and being written, a helper thread claims batch N+1 and
decodes it (JPEG decoding and the model both release the GIL), so the model never waits for
a decode to start. One batch ahead at most: the claim holds leases that the heartbeat renews,
and a lookahead deeper than one would only hold more items under one worker.

The loop runs until a claim comes back short (the queue was empty after the doorbell's
delete, see `clipmod.queue`) or the call's budget is spent, so its messages are acknowledged
and a warm shutdown waits for at most one budget. Failures keep their meaning: a batch whose
model or write fails hands its items back and the loop stops after the batch already claimed
ahead; a database outage raises (the task rejects its messages), and whatever was claimed
ahead stays in `Scorer.held`, named again by the next call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from workers.pipeline import Batch, Scorer

log = logging.getLogger(__name__)


def score_queued(
    scorer: Scorer,
    item_ids: list[str],
    before_claim: Callable[[], None],
    budget_s: float,
    ahead_pool: ThreadPoolExecutor,
) -> tuple[list[str], bool]:
    """Score `item_ids` and then the oldest queued items, a full batch per claim; returns
    (requeued ids, whether more may be waiting)."""
    size = scorer.settings.batch_size
    deadline = time.monotonic() + budget_s

    def take(ids: list[str]) -> Batch:
        before_claim()
        return scorer.begin(ids, size)

    requeue: list[str] = []
    batch = take([*scorer.held, *item_ids])
    while batch.work:
        full = len(batch.work) >= size
        ahead: Future[Batch] | None = None
        if full and not requeue and time.monotonic() < deadline:
            ahead = ahead_pool.submit(take, [])
        try:
            requeue += scorer.finish(batch)
        except BaseException:
            # Let the claim ahead end before the task gives up; its items stay held (the next
            # call claims them again) and its own failure must not hide this one.
            if ahead is not None and ahead.exception() is not None:
                log.warning("the claim ahead failed too: %s", ahead.exception())
            raise
        if ahead is None:
            return requeue, full
        batch = ahead.result()
    return requeue, False
