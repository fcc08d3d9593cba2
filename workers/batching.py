"""Dynamic batching on top of celery-batches.

celery-batches buffers messages and flushes them as one task call when `flush_every` arrive or
every `flush_interval` seconds. Left as is, its timer keeps flushing small batches while the
model is busy, and they queue up behind the running batch: under load the batch size collapses.
`GatheringBatches` holds the timer flush while a batch is in flight, so items that arrive during
a forward pass form the next full batch instead (what Triton calls dynamic batching). The other
half of that: an idle worker flushes the moment a message arrives (no wait to fill a batch),
and a busy one starts the gathered batch the moment the running one returns.

Two more repairs live here because this is where celery-batches meets Celery's consumer:

- After a broker connection loss Celery clears the event loop's timers (`hub.timer.clear()` in
  `celery/worker/loops.py`) and restarts the consumer, which asks every task for a new
  `Strategy`. celery-batches only starts its flush timer when `_tref is None`, which it no longer
  is, so partial batches were never flushed again (only full ones). `Strategy` here forgets the
  dead timer and, if requests are waiting, starts a new one on the new loop.
- The batch task returns True only when every item was finished or handed back to the queue.
  Anything else (a database outage before the claim, a failed hand-back) rejects the messages
  with requeue instead of acknowledging them: a message is never acked for work not done.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task


class GatheringBatches(Batches):
    abstract = True
    _tref: Any  # celery-batches' flush timer entry (untyped upstream)

    def __init__(self) -> None:
        super().__init__()
        self._inflight = 0
        self._lock = threading.Lock()

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:  # noqa: N802 - Celery's name
        handler = super().Strategy(task, app, consumer)
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        if self._buffer.qsize():
            self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)

        def on_message(*args: Any, **kwargs: Any) -> None:
            handler(*args, **kwargs)
            # An idle model starts at once: waiting for the timer would only add latency.
            with self._lock:
                idle = self._inflight == 0
            if idle and self._buffer.qsize():
                self._do_flush()

        return on_message

    def _do_flush(self) -> None:
        with self._lock:
            busy = self._inflight > 0
        if busy and self._buffer.qsize() < self.flush_every:
            return
        super()._do_flush()

    def flush(self, requests: Collection[Request]) -> Any:
        serializable = ([SimpleRequest.from_request(r) for r in requests],)
        with self._lock:
            self._inflight += 1

        def on_accepted(pid: int, time_accepted: float) -> None:
            for req in requests:
                if not req.task.acks_late:
                    req.acknowledge()

        def on_return(result: Any) -> None:
            for req in requests:
                if not req.task.acks_late:
                    continue
                if result is True:
                    req.acknowledge()
                else:
                    req.reject(requeue=True)
            with self._lock:
                self._inflight -= 1
                idle = self._inflight == 0
            # What gathered during this batch is the next one: start it now, not at the timer.
            if idle and self._buffer.qsize():
                self._do_flush()

        return self._pool.apply_async(
            apply_batches_task,
            (self, serializable, 0, None),
            accept_callback=on_accepted,
            callback=on_return,
        )
