"""What one task call does: claim, score and write queued items, batch after batch, overlapped.

Three lanes, each one batch apart. While batch N is on the model (forward pass and verdicts,
`Scorer.compute`), a helper thread claims and decodes batch N+1, and a writer thread writes
batch N-1 (`Scorer.settle`). JPEG decoding, the model and the database driver all release the
GIL, so the model waits neither for a decode to start nor for a write to end.

Each lane is bounded to one batch: the claim holds leases that the heartbeat renews (every item
this worker holds in `processing`, written or not, see `store.renew`), and a deeper pipeline
would only hold more items under one worker. Before handing batch N to the writer the loop
waits for N-1's write, and before the call returns it waits for the write in flight, so the
task's messages (acks_late) are acknowledged only after every write has ended.

The loop runs until a claim comes back short (the queue was empty after the doorbell's delete,
see `clipmod.queue`) or the call's budget is spent, so its messages are acknowledged and a warm
shutdown waits for at most one budget. Failures keep their meaning: a batch whose decode, model
or write fails hands its own items back (the writer does that, in order) and the loop claims
no further batch, finishing only those already claimed; the other batches' verdicts are written
as usual. A database outage (a claim, or a failed batch's hand-back, raises) ends the call with
that error (the task rejects its messages), after the batch already computed was still offered
to the writer; whatever was claimed but not written stays in `Scorer.held`, named again by the
next call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from workers.pipeline import Batch, Scorer

log = logging.getLogger(__name__)


class WriteBehind:
    """The writer lane: at most one batch's write in flight, its outcome collected in order."""

    def __init__(self, scorer: Scorer, pool: ThreadPoolExecutor):
        self.scorer, self.pool = scorer, pool
        self.requeue: list[str] = []
        self.error: BaseException | None = None  # the first hand-back that raised
        self.failed = False  # some batch failed: claim no further batch
        self._flight: tuple[Batch, Future[list[str]]] | None = None

    def hand(self, batch: Batch) -> None:
        """Write `batch` (or hand its items back) behind the caller, after the previous one."""
        self.wait()
        self._flight = (batch, self.pool.submit(self.scorer.settle, batch))

    def wait(self) -> None:
        """Let the write in flight end and collect it; a raising hand-back is kept, not raised,
        so the caller can still write what it computed before giving up."""
        if self._flight is None:
            return
        batch, future = self._flight
        self._flight = None
        try:
            self.requeue += future.result()
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            else:
                log.warning("another hand-back failed too: %s", exc)
        if batch.error is not None:
            self.failed = True


def score_queued(
    scorer: Scorer,
    item_ids: list[str],
    before_claim: Callable[[], None],
    budget_s: float,
    ahead_pool: ThreadPoolExecutor,
    write_pool: ThreadPoolExecutor,
    on_full: Callable[[], None] = lambda: None,
) -> tuple[list[str], bool]:
    """Score `item_ids` and then the oldest queued items, a full batch per claim; returns
    (requeued ids, whether more may be waiting) once every write has ended. `on_full` runs
    after each claim that came back full: more may be queued than this worker takes soon."""
    size = scorer.settings.batch_size
    deadline = time.monotonic() + budget_s

    def take(ids: list[str]) -> Batch:
        before_claim()
        batch = scorer.begin(ids, size)
        if len(batch.work) >= size:
            on_full()
        return batch

    writes = WriteBehind(scorer, write_pool)
    ahead: Future[Batch] | None = None
    more = False
    try:
        batch = take([*scorer.held, *item_ids])
        while batch.work:
            full = len(batch.work) >= size
            stop = writes.failed or writes.error is not None or time.monotonic() >= deadline
            if full and not stop:
                ahead = ahead_pool.submit(take, [])
            scorer.compute(batch)  # keeps the batch's own failure in it, for `settle`
            writes.failed |= batch.error is not None
            writes.hand(batch)  # waits for N-1's write, which ran during this forward
            if ahead is None or writes.error is not None:
                more = full
                break
            claimed, ahead = ahead, None
            batch = claimed.result()
        writes.wait()
    except BaseException:
        _end(ahead, writes)
        raise
    if writes.error is not None:
        _end(ahead, writes)
        raise writes.error
    return writes.requeue, more


def _end(ahead: Future[Batch] | None, writes: WriteBehind) -> None:
    """Before the task gives up: let the claim ahead end (its items stay held, the next call
    claims them again) and the write in flight end; their own failures are logged, so they do
    not hide the one raised."""
    if ahead is not None and ahead.exception() is not None:
        log.warning("the claim ahead failed too: %s", ahead.exception())
    first = writes.error
    writes.wait()
    if writes.error is not None and writes.error is not first:
        log.warning("a hand-back failed too: %s", writes.error)
