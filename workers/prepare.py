"""Claimed items → model input: blobs read, text tokenised, images decoded.

Kept apart from `workers.pipeline` (which claims, scores and writes) because where an image is
decoded is a choice of its own with three answers, picked per image: on the model's GPU
(`workers.gpujpeg`: plain JPEGs, where nvJPEG is there), in decode processes (`workers.decoding`:
the default on more than 2 cores), or in this process's threads. Whichever path an image takes,
a failure is that item's own (`item_guard`), never its batch's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch

from clipmod import images, pixels
from clipmod.errors import ClipmodError
from clipmod.runtime import ClipRuntime
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from workers import decoding
from workers.gpujpeg import GpuJpeg

log = logging.getLogger(__name__)


class Preparable(Protocol):
    """What preparing needs of a claimed item (`workers.pipeline._Work`)."""

    id: str
    image_sha256: str | None
    text: str | None
    pixels: np.ndarray | torch.Tensor | None
    windows: list[list[int]]
    error: ClipmodError | None


@contextmanager
def item_guard(w: Preparable) -> Iterator[None]:
    """Whatever goes wrong preparing an item fails this item only, never its batch.

    Inputs are chosen by adversaries, so an unforeseen exception here is a property of the
    item, and retrying its batch-mates three times would only fail them too.
    """
    try:
        yield
    except ClipmodError as exc:
        w.error = exc
    except FileNotFoundError:
        w.error = ClipmodError("the stored image is missing", code="blob_missing")
    except Exception as exc:
        log.exception("item %s: preparing it failed; failing this item only", w.id)
        w.error = ClipmodError(
            f"the item could not be prepared for scoring ({type(exc).__name__})",
            code="prepare_error",
        )


class Preparer:
    """One per worker: its decode threads, its decode processes and its GPU decoder."""

    def __init__(self, settings: Settings, runtime: ClipRuntime, blobs: BlobStore):
        self.runtime = runtime
        self.blobs = blobs
        self._limits = images.ImageLimits.from_settings(settings)
        self._threads = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._processes = (
            decoding.DecodePool(settings.decode_processes, self._limits, runtime.image_spec)
            if settings.decode_processes > 0
            else None
        )
        self.gpu = GpuJpeg.load(settings.gpu_jpeg, runtime.image_spec, self._limits, runtime.device)

    def warm(self) -> None:
        if self._processes is not None:
            self._processes.warm()

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.close()

    def prepare(self, work: Sequence[Preparable]) -> None:
        """Sets each item's `pixels` and `windows`, or its `error`."""
        if self._processes is None and self.gpu is None:
            list(self._threads.map(self._decode_one, work))
            return
        jobs = self._read(work)
        if self.gpu is not None and jobs:
            jobs = self._decode_on_gpu(self.gpu, jobs)
        if jobs:
            self._decode_on_cpu(jobs)

    def _decode_one(self, w: Preparable) -> None:
        with item_guard(w):
            if w.image_sha256:
                data = self.blobs.get(w.image_sha256)
                w.pixels = pixels.decode_pixels(data, self._limits, self.runtime.image_spec)
            if w.text:
                w.windows = self.runtime.text_windows(w.text)

    def _read(self, work: Sequence[Preparable]) -> list[tuple[Preparable, bytes]]:
        """Blobs read and text tokenised here; returns the images still to decode."""
        jobs: list[tuple[Preparable, bytes]] = []
        for w in work:
            with item_guard(w):
                if w.image_sha256:
                    jobs.append((w, self.blobs.get(w.image_sha256)))
                if w.text:
                    w.windows = self.runtime.text_windows(w.text)
        return jobs

    def _decode_on_gpu(
        self, gpu: GpuJpeg, jobs: list[tuple[Preparable, bytes]]
    ) -> list[tuple[Preparable, bytes]]:
        """The plain JPEGs decoded on the model's GPU; returns what the CPU must decode."""
        rest = []
        for (w, data), on_gpu in zip(jobs, gpu.decode([data for _, data in jobs]), strict=True):
            if on_gpu is None:
                rest.append((w, data))
            else:
                w.pixels = on_gpu
        return rest

    def _decode_on_cpu(self, jobs: list[tuple[Preparable, bytes]]) -> None:
        """In the decode processes when there are some, else in this worker's threads; only
        the pixels cross to a child."""
        blobs = [data for _, data in jobs]
        if self._processes is not None:
            decoded = self._processes.decode(blobs)
        else:
            spec = self.runtime.image_spec
            decoded = list(
                self._threads.map(
                    lambda data: decoding.decode_bytes(data, self._limits, spec), blobs
                )
            )
        for (w, _), d in zip(jobs, decoded, strict=True):
            if d.pixels is not None:
                w.pixels = d.pixels
                continue
            if d.trace:
                log.error("item %s: preparing it failed; failing this item only\n%s", w.id, d.trace)
            w.error = ClipmodError(d.message, code=d.code)
