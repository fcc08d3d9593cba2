"""Decoding in processes: same pixels and verdicts as threads, and per-item isolation kept."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clipmod import embeddings, pixels
from clipmod.images import ImageLimits
from clipmod.models import Item, ItemEmbedding, ItemStatus
from clipmod.settings import Settings
from clipmod.storage import BlobStore
from tests import images
from tests.unit.test_pipeline import add_item
from workers import decoding
from workers.pipeline import Scorer


def die_on_marker(data: bytes) -> decoding.Decoded:
    """A decoder that crashes its process on one input, as a native decoder bug would."""
    if data == b"die":
        os._exit(1)
    return decoding.decode_job(data)


@pytest.fixture
def process_scorer(  # type: ignore[no-untyped-def]
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> Iterator[Scorer]:
    s = Scorer(
        dataclasses.replace(settings, decode_processes=2),
        runtime,
        sessions,
        BlobStore(settings.blob_dir),
    )
    yield s
    s.close()


def test_processes_give_the_threads_pixels_and_isolate_bad_items(
    process_scorer: Scorer, settings: Settings, sessions: sessionmaker[Session], runtime
) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    jpeg = images.encode(Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)))
    good = add_item(settings, sessions, image=jpeg)
    corrupt = add_item(settings, sessions, image=images.truncated_jpeg())
    bomb = add_item(settings, sessions, image=images.png_bomb())
    text = add_item(settings, sessions, text="a photo of a knife")
    process_scorer.score_batch([good, corrupt, bomb, text])
    with sessions() as session:
        rows = {i.id: i for i in session.scalars(select(Item))}
        emb = session.scalars(select(ItemEmbedding).where(ItemEmbedding.item_id == good)).one()
    assert rows[good].status == ItemStatus.SCORED
    assert rows[text].status == ItemStatus.SCORED
    assert (rows[corrupt].status, rows[corrupt].error_code) == (ItemStatus.FAILED, "corrupt_image")
    assert rows[bomb].error_code == "image_too_many_pixels"
    limits = ImageLimits.from_settings(settings)
    pool = decoding.DecodePool(1, limits, runtime.image_spec)
    try:
        [decoded] = pool.decode([jpeg])
    finally:
        pool.close()
    in_thread = pixels.decode_pixels(jpeg, limits, runtime.image_spec)
    assert decoded.pixels is not None and decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, in_thread)
    stored = embeddings.from_bytes(emb.image, emb.dim)[0]
    np.testing.assert_allclose(stored, runtime.encode_pixels(in_thread[None])[0], atol=2e-3)


def test_a_dying_decoder_fails_only_its_item(settings: Settings, runtime) -> None:  # type: ignore[no-untyped-def]
    limits = ImageLimits.from_settings(settings)
    pool = decoding.DecodePool(2, limits, runtime.image_spec, job=die_on_marker)
    try:
        jpeg = images.solid()
        out = pool.decode([jpeg, b"die", jpeg, b"not an image"])
        assert [d.pixels is not None for d in out] == [True, False, True, False]
        assert out[1] == decoding.CRASHED
        assert out[3].code != "" and out[3].code != decoding.CRASHED.code
        assert pool.decode([jpeg])[0].pixels is not None  # a fresh pool serves the next batch
        # A batch goes out in slices of several images: the crash takes its slice-mates (and
        # every slice in flight) down with it, and they are retried one at a time.
        batch = [jpeg] * 9 + [b"die"] + [jpeg] * 10
        assert len(batch) > pool.processes * decoding.SLICES_PER_PROCESS
        out = pool.decode(batch)
        assert [k for k, d in enumerate(out) if d.pixels is None] == [9]
        assert out[9] == decoding.CRASHED
    finally:
        pool.close()


CHILD = """
import json, multiprocessing, numpy as np, time
from clipmod.images import ImageLimits
from clipmod.pixels import ImageSpec
from workers.decoding import DecodePool
spec = ImageSpec(64, None, (64, 64), 3, np.zeros(3, np.float32), np.ones(3, np.float32), 1 / 255)
pool = DecodePool(2, ImageLimits(40_000_000, 12_000, 20.0), spec)
pool.warm()
print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_decoders_do_not_outlive_a_sigkilled_worker() -> None:
    with subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        children = json.loads(proc.stdout.readline())
        assert len(children) >= 2 and all(_running(p) for p in children)
        proc.kill()
    deadline = time.monotonic() + 15
    while any(_running(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if _running(p)]
