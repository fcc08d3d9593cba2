"""Dynamic batching on top of celery-batches.

celery-batches buffers messages and flushes them as one task call when `flush_every` arrive or
every `flush_interval` seconds. Left as is, its timer keeps flushing small batches while the
model is busy, and they queue up behind the running batch: under load the batch size collapses.
`GatheringBatches` holds the timer flush while a batch is in flight, so items that arrive during
a forward pass form the next full batch instead (what Triton calls dynamic batching).
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

    def __init__(self) -> None:
        super().__init__()
        self._inflight = 0
        self._lock = threading.Lock()

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
            with self._lock:
                self._inflight -= 1
            for req in requests:
                if req.task.acks_late:
                    req.acknowledge()

        return self._pool.apply_async(
            apply_batches_task,
            (self, serializable, 0, None),
            accept_callback=on_accepted,
            callback=on_return,
        )
