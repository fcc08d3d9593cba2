"""What a worker tells Prometheus and its log, per batch and per reconcile pass.

One worker is one process (Celery's `threads` pool), so the default registry is enough: no
multiprocess mode. The numbers answer an operator's questions in order: is work flowing
(items scored/failed, batch size), where does a batch spend its time (stage seconds), and is
anything waiting too long (queue depth, the age of the oldest queued item, re-queues by reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("workers.batch")

STAGES = ("claim", "decode", "forward", "decide", "write")

BATCH_SIZE = Histogram(
    "clipmod_batch_size",
    "Items per scored batch (after de-duplication and the claim).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
STAGE_SECONDS = Histogram(
    "clipmod_batch_stage_seconds",
    "Seconds a batch spends in each stage: claim, decode, forward, decide, write.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCORED = Counter("clipmod_items_scored_total", "Items given a verdict.")
FAILED = Counter("clipmod_items_failed", "Items marked failed, by error code.", ["code"])
REQUEUED = Counter(
    "clipmod_items_requeued",
    "Items sent to the broker again, by reason: batch_failed, lease_expired, missing.",
    ["reason"],
)
QUEUE_DEPTH = Gauge("clipmod_queue_depth", "Items queued in the database (all workers).")
BROKER_MESSAGES = Gauge(
    "clipmod_broker_messages", "Messages waiting in the broker's scoring queue."
)
OLDEST_QUEUED = Gauge(
    "clipmod_oldest_queued_age_seconds",
    "Age of the oldest queued item (0 when none): the alert's signal that work is stuck.",
)
READY = Gauge("clipmod_worker_ready", "1 while this worker's /readyz answers 200.")
BLOBS_SWEPT = Counter(
    "clipmod_blobs_swept",
    "Files the blob sweep removed (delivery workers), by kind: unreferenced (a blob no row "
    "names), unfinished (a write that never completed), aside (left by a crashed deletion).",
    ["kind"],
)

for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)
for _reason in ("batch_failed", "lease_expired", "missing"):
    REQUEUED.labels(_reason)
for _kind in ("unreferenced", "unfinished", "aside"):
    BLOBS_SWEPT.labels(_kind)


class StageTimer:
    """Wall-clock seconds per named stage of one batch."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class _Outcome(Protocol):
    @property
    def error(self) -> object: ...


def observe_batch(work: Sequence[_Outcome], timer: StageTimer) -> None:
    """Record a finished batch: histograms, counters, and one debug line for the log."""
    BATCH_SIZE.observe(len(work))
    for name, seconds in timer.seconds.items():
        STAGE_SECONDS.labels(name).observe(seconds)
    failed = [getattr(w.error, "code", "error") for w in work if w.error is not None]
    SCORED.inc(len(work) - len(failed))
    for code in failed:
        FAILED.labels(code).inc()
    if log.isEnabledFor(logging.DEBUG):
        total = timer.total
        fields = {f"{k}_ms": round(v * 1000, 1) for k, v in timer.seconds.items()}
        fields.update(total_ms=round(total * 1000, 1))
        rate = len(work) / total if total > 0 else 0.0
        log.debug(
            "batch size=%d %s img_per_s=%.0f",
            len(work),
            " ".join(f"{k}={v}" for k, v in fields.items()),
            rate,
            extra={"size": len(work), **fields, "img_per_s": round(rate, 1)},
        )
