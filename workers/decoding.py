"""Decoding stored images into model input in a pool of processes.

Decode + resize holds the GIL for most of its time: threads stop scaling at a few cores (on
a 16-core machine 1 thread gives ~250 img/s, 16 threads ~1,180), processes keep scaling (16
give ~2,700) as long as what comes back is small. So a child returns uint8 pixels at the
model's resolution (150 kB for 224 px), never float32, and normalisation happens on the device.

Per-item isolation holds across the process boundary. A child never raises into the pool:
an exception pickles without its attributes (a `ClipmodError` would lose its `code`), so each
job returns a `Decoded` saying what went wrong. A child that dies outright (a decoder crash,
the OOM killer) breaks the whole pool and every job in flight with it; those jobs are retried
one at a time in a fresh pool, so only the item that kills its decoder again fails.

Children are spawned (never forked from the threaded, torch-holding worker) and import only
this module and `clipmod.pixels`/`clipmod.images`: no torch, no model.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from clipmod import pixels
from clipmod.errors import ClipmodError
from clipmod.images import ImageLimits
from clipmod.pixels import ImageSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """One job's outcome: pixels, or the error the item fails with."""

    pixels: np.ndarray | None = None
    code: str = ""
    message: str = ""
    trace: str = ""  # set for unforeseen failures, logged by the worker


_job: tuple[ImageLimits, ImageSpec] | None = None


def _exit_with(parent: int, poll_s: float) -> None:
    """A SIGKILLed worker cannot stop its pool, and the children hold both ends of the pool's
    queues (so they never read EOF): without this they would outlive it forever."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(0)


def _init(limits: ImageLimits, spec: ImageSpec, parent: int) -> None:
    """`parent` comes from the worker: a child still starting when the worker dies would
    otherwise read init's pid from `getppid()` and watch the wrong process."""
    global _job
    _job = (limits, spec)
    if os.getppid() != parent:
        os._exit(0)
    watch = threading.Thread(target=_exit_with, args=(parent, 1.0), daemon=True)
    watch.start()


def decode_job(data: bytes) -> Decoded:
    """Runs in a child: whatever goes wrong becomes this item's `Decoded` error."""
    assert _job is not None, "the pool's initializer did not run"
    return decode_bytes(data, *_job)


def decode_bytes(data: bytes, limits: ImageLimits, spec: ImageSpec) -> Decoded:
    """One image's pixels or its error, in a child or (without processes) a worker's thread."""
    try:
        return Decoded(pixels=pixels.decode_pixels(data, limits, spec))
    except ClipmodError as exc:
        return Decoded(code=exc.code, message=exc.message)
    except Exception as exc:
        return Decoded(
            code="prepare_error",
            message=f"the item could not be prepared for scoring ({type(exc).__name__})",
            trace=traceback.format_exc(),
        )


def decode_chunk(job: Callable[[bytes], Decoded], chunk: list[bytes]) -> list[Decoded]:
    """Runs in a child: a slice of the batch. One job per image cost the worker a future, a
    pickle each way and a wake-up of the pool's threads per image, ~0.14 ms of its own CPU an
    image: at a GPU's rate that alone would be most of the worker's main process."""
    return [job(data) for data in chunk]


# Slices per decoder process and batch: more than one, so a process that drew slow images
# does not hold up the batch while the others idle.
SLICES_PER_PROCESS = 4

CRASHED = Decoded(
    code="prepare_error",
    message="the item could not be prepared for scoring (its decoder process died)",
)


class DecodePool:
    """A process pool created on first use, once per worker, and kept for its lifetime."""

    def __init__(
        self,
        processes: int,
        limits: ImageLimits,
        spec: ImageSpec,
        job: Callable[[bytes], Decoded] = decode_job,
    ):
        self.processes = processes
        self.limits = limits
        self.spec = spec
        self.job = job  # a module-level function the children can import (tests swap it)
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(self.limits, self.spec, os.getpid()),
            )
        return self._pool

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def warm(self) -> None:
        """Start every child now (spawning costs ~0.3 s each), not inside the first batch."""
        list(self._get().map(self.job, [b""] * self.processes))

    def decode(self, blobs: list[bytes]) -> list[Decoded]:
        size = max(1, -(-len(blobs) // (self.processes * SLICES_PER_PROCESS)))
        chunks = [blobs[i : i + size] for i in range(0, len(blobs), size)]
        futures = [self._get().submit(decode_chunk, self.job, chunk) for chunk in chunks]
        out: list[Decoded | None] = []
        for future, chunk in zip(futures, chunks, strict=True):
            try:
                out.extend(future.result())
            except BrokenProcessPool:
                out.extend([None] * len(chunk))
        if any(d is None for d in out):
            log.error("a decode process died; retrying its batch-mates one at a time")
            self._reset()
        return [
            d if d is not None else self._alone(data) for d, data in zip(out, blobs, strict=True)
        ]

    def _alone(self, data: bytes) -> Decoded:
        try:
            return self._get().submit(self.job, data).result()
        except BrokenProcessPool:
            self._reset()
            return CRASHED

    def close(self) -> None:
        self._reset()
