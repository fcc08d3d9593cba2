"""Group commit: uploads that arrive while one transaction is being written share the next.

Why: an API process is bound by its GIL, and on PostgreSQL + Redis every accepted upload made
four round trips of its own (BEGIN with the INSERT, COMMIT, the doorbell SET, and the message
when the bell was quiet). Each round trip costs its driver's Python code and two GIL hand-offs
among the server's request threads, which together were a third of an upload's server CPU.
Batched, a transaction and a doorbell serve every upload that queued up behind the previous
one: at load, one per ~8 uploads; at idle, a batch of one, as before, with no added wait.

There is no writer thread: the request thread that finds no commit running becomes the leader,
writes whatever is queued (its own job included) and wakes the others. An idle upload therefore
costs no thread hand-off at all, and nothing needs starting, stopping or forking with the
server. Each waiter sleeps on its own lock and is woken once: when its job is answered, or to
lead the next batch if jobs queued up during this one (the leader hands over rather than
writing again itself, so its own request is not held up by later arrivals). One condition for
all waiters woke every one of them after each batch, and those futex wake-ups were a visible
share of an upload's system time.

The commit function answers each job on its own (a result, or the exception for that job), so
one bad row fails one request; an exception out of the function fails its whole batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# A full batch of 8 request threads is the common case; the bound only keeps one transaction
# (and the wait of the first request in it) short if many threads or replicas of the job pile up.
MAX_BATCH = 64


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "job", "result", "wake")

    def __init__(self, job: T):
        self.job = job
        self.done = False  # answered; False after a wake-up means "lead the next batch"
        self.result: R | None = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()  # held until the waiter should run: a binary semaphore
        self.wake.acquire()


class GroupCommit(Generic[T, R]):
    def __init__(
        self, commit: Callable[[list[T]], list[R | BaseException]], max_batch: int = MAX_BATCH
    ):
        self._commit = commit
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False
        self.batches = 0  # how many commits ran: the tests read it, and so can a profiler
        self.jobs = 0

    def submit(self, job: T) -> R:
        """Commit `job` (with whatever else is queued) and return its result, or raise its error."""
        slot: _Slot[T, R] = _Slot(job)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.wake.acquire()
            if slot.done:
                return self._answer(slot)
        # Leading: our job heads the queue (it was empty when we found no leader, or we were
        # woken as its head), so it is in the batch we take.
        with self._lock:
            batch = self._queue[: self._max]
            del self._queue[: self._max]
        results = self._results(batch)
        for queued, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                queued.error = result
            else:
                queued.result = result
            queued.done = True
            if queued is not slot:
                queued.wake.release()
        with self._lock:
            self.batches += 1
            self.jobs += len(batch)
            following = self._queue[0] if self._queue else None
            self._busy = following is not None
        if following is not None:
            following.wake.release()  # not done: it leads the next batch
        return self._answer(slot)

    def _results(self, batch: list[_Slot[T, R]]) -> list[R | BaseException]:
        try:
            results = self._commit([slot.job for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"commit answered {len(results)} of {len(batch)} jobs")
        except BaseException as exc:  # every waiter must be answered, even on ^C
            return [exc] * len(batch)
        return results

    @staticmethod
    def _answer(slot: _Slot[T, R]) -> R:
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]
