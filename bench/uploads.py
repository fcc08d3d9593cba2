"""What `bench.intake` sends and where it lands: the upload (a real JPEG, new bytes every time,
in a multipart body) and the blob store it fills, prepared and timed as a store in service.
"""

from __future__ import annotations

import io
import os
import statistics
import struct
import time
from pathlib import Path

from PIL import Image

from clipmod.demo import world
from clipmod.storage import BlobStore

BOUNDARY = "clipmodbenchboundary"


def jpeg() -> bytes:
    img = world.render(7, "heldout").image.resize((224, 224), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def unique(image: bytes, tag: str) -> bytes:
    """The JPEG with `tag` in a comment segment: other bytes, the same pixels and decode work.

    Real uploads differ, so each one is a new blob to write. The same bytes every time would
    let intake skip the write (the blob store is content-addressed) and flatter it.
    """
    comment = tag.encode()
    return image[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + image[2:]


def multipart(image: bytes, external_id: str) -> bytes:
    image = unique(image, external_id)
    return b"".join(
        [
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="external_id"\r\n\r\n'.encode(),
            external_id.encode(),
            f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            'filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode(),
            image,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )


def settled_store(blob_dir: Path) -> None:
    """Make the blob store's 65,536 leaf folders, as every store has after its first few
    hundred thousand uploads. In a new one, most of the run's uploads would be the first in
    their folder and pay a `mkdir` that a store in service no longer does."""
    for first in range(256):
        for second in range(256):
            os.makedirs(blob_dir / f"{first:02x}" / f"{second:02x}", exist_ok=True)


def blob_write_us(blob_dir: Path, n: int = 300) -> float:
    """Median µs to store one new 12 kB blob through `BlobStore.put`, on one thread.

    Printed beside the ratio because this machine's file system sets part of intake's cost and
    swings by itself: creating a file took 8 to 370 µs depending on what had been deleted
    before. A slow figure here explains a low ratio in the same run.
    """
    store = BlobStore(blob_dir)
    times = []
    for _ in range(n):
        data = os.urandom(12 * 1024)
        started = time.perf_counter()
        digest = store.put(data)
        times.append(time.perf_counter() - started)
        store.path(digest).unlink()
    return statistics.median(times) * 1e6
