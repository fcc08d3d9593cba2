"""GPU JPEG decoding: which images go there, the model-sized pixels it makes, and its fallback.

nvJPEG itself needs a GPU and torchvision, which the CPU machines never install; here a
full-scale Pillow decode stands in for it (the same input the GPU resize gets: every pixel of
the JPEG), so what is tested is this project's routing, resize, crop and fallback. The real
decoder is measured against the CPU path in `bench.gpudecode` on a GPU (README "Benchmarks").
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from transformers import CLIPImageProcessor

from clipmod import images as clipmod_images
from clipmod import pixels
from clipmod.images import ImageLimits
from clipmod.models import Item, ItemEmbedding, ItemStatus
from clipmod.pixels import ImageSpec
from clipmod.settings import Settings
from tests import images
from tests.unit.test_pipeline import add_item
from workers.gpujpeg import GpuJpeg, draft_scale, full_scale_pillow, resize_crop
from workers.pipeline import Scorer

LIMITS = ImageLimits(40_000_000, 12_000, 20.0)


def photo(w: int = 640, h: int = 480, seed: int = 0) -> Image.Image:
    """Smooth content with some noise: what a resampler's differences show up on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    noisy = base + rng.normal(0, 8, base.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    buf = io.BytesIO()
    photo(64, 48).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (images.encode(photo()), True),
        (images.encode(photo().convert("L")), True),
        (images.encode(photo(), "PNG"), False),
        (images.encode(photo().convert("CMYK")), False),
        (rotated_jpeg(), False),
        (images.truncated_jpeg()[:40], False),
        (b"\xff\xd8 not a jpeg at all", False),
        (images.encode(photo(400, 10)), False),  # aspect 40 > the limit of 20
    ],
    ids=["rgb", "grey", "png", "cmyk", "exif-rotated", "header-cut", "garbage", "too-long"],
)
def test_only_what_the_gpu_decodes_as_pillow_does_goes_there(data: bytes, expected: bool) -> None:
    size = clipmod_images.plain_jpeg(data, LIMITS)
    assert (size is not None) is expected
    if size is not None:
        assert size == Image.open(io.BytesIO(data)).size


def test_big_jpegs_and_a_full_budget_stay_on_the_cpu() -> None:
    spec = ImageSpec.from_processor(CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=64))
    small, big = images.encode(photo(320, 240)), images.encode(photo(640, 480))
    gpu = GpuJpeg(
        spec,
        LIMITS,
        torch.device("cpu"),
        full_scale_pillow,
        image_pixels=640 * 480 - 1,  # `big` is one pixel over
        batch_pixels=2 * 320 * 240,  # room for two small ones
    )
    out = gpu.decode([small, big, small, small])
    assert [o is not None for o in out] == [True, False, True, False]


@pytest.mark.parametrize(
    "spec",
    [
        ImageSpec.from_processor(CLIPImageProcessor()),  # ViT-B/32: shortest edge 224, crop 224
        ImageSpec.from_processor(CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=64)),
        ImageSpec.from_processor(
            CLIPImageProcessor(size={"height": 96, "width": 96}, do_center_crop=False)
        ),
    ],
    ids=["shortest-224", "shortest-64", "fixed-96"],
)
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (300, 300), (160, 120)])
def test_gpu_geometry_matches_the_cpu_path(spec: ImageSpec, size: tuple[int, int]) -> None:
    data = images.encode(photo(*size), quality=92)
    cpu = pixels.decode_pixels(data, LIMITS, spec).astype(np.int16)
    gpu = resize_crop(
        full_scale_pillow([torch.frombuffer(bytearray(data), dtype=torch.uint8)])[0][None], spec
    )
    assert gpu.shape[1:] == cpu.shape
    diff = np.abs(gpu[0].numpy().astype(np.int16) - cpu)
    # libjpeg's reduced-scale IDCT and Pillow's resampler are not torch's: close, not equal.
    assert diff.mean() < 1.0, diff.mean()
    assert np.percentile(diff, 99) <= 4


@pytest.mark.parametrize(
    "size", [(640, 480), (4000, 3000), (225, 900), (1791, 449), (224, 224), (100, 80)]
)
@pytest.mark.parametrize("target", [64, 224])
def test_draft_scale_is_pillows(size: tuple[int, int], target: int) -> None:
    img = Image.open(io.BytesIO(images.encode(Image.new("RGB", size))))
    img.draft("RGB", (target, target))
    scale = draft_scale(*size, target)
    assert img.size == (-(-size[0] // scale), -(-size[1] // scale))


def test_plain_jpegs_go_to_the_gpu_and_the_rest_come_back() -> None:
    spec = ImageSpec.from_processor(CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=64))
    gpu = GpuJpeg(spec, LIMITS, torch.device("cpu"), full_scale_pillow)
    blobs = [
        images.encode(photo()),
        images.encode(photo(), "PNG"),
        images.encode(photo(300, 400, seed=1)),
        rotated_jpeg(),
    ]
    out = gpu.decode(blobs)
    assert [o is not None for o in out] == [True, False, True, False]
    assert all(o.shape == (3, 64, 64) and o.dtype == torch.uint8 for o in out if o is not None)


def test_a_batch_the_decoder_refuses_falls_back_whole() -> None:
    def refuse(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        raise RuntimeError("nvjpegDecodeBatched failed")

    def grey(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t[:1] for t in full_scale_pillow(blobs)]  # one channel: not what the model takes

    spec = ImageSpec.from_processor(CLIPImageProcessor(size={"shortest_edge": 64}, crop_size=64))
    blobs = [images.encode(photo()), images.encode(photo(seed=2))]
    assert GpuJpeg(spec, LIMITS, torch.device("cpu"), refuse).decode(blobs) == [None, None]
    assert GpuJpeg(spec, LIMITS, torch.device("cpu"), grey).decode(blobs) == [None, None]

    def empty(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.zeros((3, 0, 0), dtype=torch.uint8) for _ in blobs]  # the resize raises

    assert GpuJpeg(spec, LIMITS, torch.device("cpu"), empty).decode(blobs) == [None, None]


def test_auto_stays_on_the_cpu_path_without_a_gpu() -> None:
    spec = ImageSpec.from_processor(CLIPImageProcessor())
    assert GpuJpeg.load("auto", spec, LIMITS, torch.device("cpu")) is None
    assert GpuJpeg.load("off", spec, LIMITS, torch.device("cuda")) is None


def test_on_without_nvjpeg_says_so() -> None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    spec = ImageSpec.from_processor(CLIPImageProcessor())
    with pytest.raises(RuntimeError, match="CLIPMOD_GPU_JPEG=on"):
        GpuJpeg.load("on", spec, LIMITS, torch.device("cpu"))


def test_scorer_mixes_gpu_and_cpu_decoded_items_in_one_batch(
    settings: Settings, sessions: sessionmaker[Session], runtime, seeded: int
) -> None:  # type: ignore[no-untyped-def]
    from clipmod import embeddings
    from clipmod.storage import BlobStore

    jpeg = images.encode(photo(seed=3), quality=92)
    first = [
        add_item(settings, sessions, image=images.encode(photo(seed=5))),
        add_item(settings, sessions, image=images.encode(photo(seed=4), "PNG")),
        add_item(settings, sessions, image=images.truncated_jpeg()),  # its header is fine
        add_item(settings, sessions, text="a photo of a knife"),
    ]
    second = add_item(settings, sessions, image=jpeg)
    seen: list[int] = []

    def counting(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        seen.append(len(blobs))
        return full_scale_pillow(blobs)

    scorer = Scorer(settings, runtime, sessions, BlobStore(settings.blob_dir))
    try:
        scorer._preparer.gpu = GpuJpeg(runtime.image_spec, LIMITS, torch.device("cpu"), counting)
        scorer.score_batch(first)  # the truncated JPEG makes the decoder refuse both JPEGs
        scorer.score_batch([second])
    finally:
        scorer.close()
    assert seen == [2, 1]
    with sessions() as session:
        status = {i.id: (i.status, i.error_code) for i in session.scalars(select(Item))}
        emb = {e.item_id: e.image for e in session.scalars(select(ItemEmbedding))}
    assert [status[i] for i in first] == [
        (ItemStatus.SCORED, None),
        (ItemStatus.SCORED, None),
        (ItemStatus.FAILED, "corrupt_image"),
        (ItemStatus.SCORED, None),
    ]
    assert status[second] == (ItemStatus.SCORED, None)
    # Decoded on the (stand-in) GPU path, the JPEG's embedding is close to the CPU path's.
    cpu = runtime.encode_pixels(pixels.decode_pixels(jpeg, LIMITS, runtime.image_spec)[None])[0]
    gpu = embeddings.from_bytes(emb[second], runtime.dim)[0]
    assert float(cpu @ gpu) > 0.999
