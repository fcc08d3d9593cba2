"""Bank entries from uploaded images: decoded and embedded exactly as the worker would.

An upload goes through the worker's own decode guard (`clipmod.images`: the same limits, the
same reduction, the same conversion to RGB) and preprocessing, so an entry's embedding is the
one the worker computes when the same image arrives as an item. The bytes are kept in the blob
store by sha256: the entry can then be re-embedded for another model revision later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from clipmod import images
from clipmod.banks.registry import NewEntry
from clipmod.errors import ClipmodError, PayloadTooLarge
from clipmod.storage import BlobStore, address


class ImageEncoder(Protocol):
    """The parts of `clipmod.runtime.ClipRuntime` an upload needs."""

    @property
    def revision(self) -> str: ...
    @property
    def image_spec(self) -> Any: ...
    def preprocess(self, img: Any) -> np.ndarray: ...
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray: ...


def embed_uploads(
    runtime: ImageEncoder,
    uploads: Sequence[tuple[str, bytes]],
    *,
    limits: images.ImageLimits,
    max_bytes: int,
    blobs: BlobStore | None = None,
) -> list[NewEntry]:
    """(label, bytes) pairs → entries; any bad image refuses the whole upload, naming it."""
    pixels, digests = [], []
    for label, data in uploads:
        if len(data) > max_bytes:
            raise PayloadTooLarge(
                f"{label}: image is {len(data)} bytes; the limit is {max_bytes}",
                code="image_too_large",
            )
        try:
            img = images.decode_rgb(data, limits, target=runtime.image_spec.target)
        except ClipmodError as exc:
            raise ClipmodError(
                f"{label}: {exc.message}", code=exc.code, status=exc.status
            ) from None
        pixels.append(runtime.preprocess(img))
        digests.append(blobs.put(data) if blobs else address(data))
    if not pixels:
        return []
    emb = runtime.encode_pixels(np.stack(pixels))
    return [
        NewEntry(e, runtime.revision, "upload", image_sha256=digest, label=label)
        for e, digest, (label, _) in zip(emb, digests, uploads, strict=True)
    ]


def ensure_stored(
    blobs: BlobStore, uploads: Sequence[tuple[str, bytes]], entries: Sequence[NewEntry]
) -> None:
    """After the entries' commit: write back an uploaded image that a deletion of the same bytes
    removed between `embed_uploads`'s put and that commit (see `BlobStore.remove_unless`)."""
    for (_, data), entry in zip(uploads, entries, strict=True):
        if entry.image_sha256 is not None:
            blobs.ensure(data, entry.image_sha256)
