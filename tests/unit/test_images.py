"""The decode guard: header limits, one decode path for intake and worker, faithful pixels."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clipmod import images
from clipmod import settings as settings_mod
from clipmod.errors import ClipmodError
from clipmod.images import ImageLimits
from clipmod.runtime import ClipRuntime
from tests.hostile import samples
from tests.images import encode

DEFAULTS = ImageLimits.from_settings(settings_mod.load({}))
SMALL = ImageLimits(max_pixels=20_000, max_side=200, max_aspect=4)


def error(fn: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(ClipmodError) as info:
        fn()
    return info.value.status, info.value.code


def both_paths(data: bytes, limits: ImageLimits = DEFAULTS) -> list[Callable[[], object]]:
    """The intake's check and the worker's decode (with a small model's target size)."""
    return [lambda: images.inspect(data, limits), lambda: images.decode_rgb(data, limits, 64)]


# -- settings and the import ------------------------------------------------------------------


def test_limits_come_from_settings(tmp_path: Path) -> None:
    assert ImageLimits(max_pixels=40_000_000, max_side=12_000, max_aspect=20.0) == DEFAULTS
    custom = settings_mod.load(
        {
            "CLIPMOD_DATA_DIR": str(tmp_path),
            "CLIPMOD_MAX_IMAGE_PIXELS": "1000",
            "CLIPMOD_MAX_IMAGE_SIDE": "300",
            "CLIPMOD_MAX_ASPECT_RATIO": "2.5",
        }
    )
    assert ImageLimits.from_settings(custom) == ImageLimits(1000, 300, 2.5)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("MAX_IMAGE_SIDE", "0", "must be >= 1"),
        ("MAX_ASPECT_RATIO", "0.5", "must be >= 1"),
        ("MAX_ASPECT_RATIO", "nan", "must be >= 1"),
        ("MAX_ASPECT_RATIO", "wide", "not a number"),
    ],
)
def test_bad_geometry_settings_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(settings_mod.SettingsError, match=f"CLIPMOD_{name}.*{fragment}"):
        settings_mod.load({f"CLIPMOD_{name}": value})


def test_importing_leaves_pillows_own_budget_alone() -> None:
    """The package promises imports without side effects; Pillow's guard is process-wide."""
    code = (
        "from PIL import Image; before = Image.MAX_IMAGE_PIXELS; import clipmod.images; "
        f"assert Image.MAX_IMAGE_PIXELS == before == {samples.PIL_DEFAULT_MAX_PIXELS}"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# -- header limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "code"),
    [
        ((150, 150), "image_too_many_pixels"),  # 22,500 > 20,000
        ((201, 60), "image_side_too_large"),
        ((100, 24), "image_aspect_ratio_too_large"),  # 4.17 > 4
        ((24, 100), "image_aspect_ratio_too_large"),
    ],
)
def test_geometry_is_refused_from_the_header(size: tuple[int, int], code: str) -> None:
    # One row of data for a taller image: decoding it would fail as truncated, so the code
    # proves the refusal came from the header.
    data = samples.raw_png(*size, rows=1)
    for path in both_paths(data, SMALL):
        assert error(path) == (413, code)


@pytest.mark.parametrize("size", [(200, 100), (200, 50), (50, 200), (100, 25)])
def test_geometry_at_the_limits_is_accepted(size: tuple[int, int]) -> None:
    data = samples.raw_png(*size)
    assert images.inspect(data, SMALL) == images.ImageInfo("png", *size)
    assert images.decode_rgb(data, SMALL).size == size


def test_a_larger_pixel_budget_than_pillows_still_works() -> None:
    """Above ~89 M pixels Pillow warns (an error under strict warnings); ours decides."""
    side = 9_500  # 90.25 M pixels
    assert side * side > samples.PIL_DEFAULT_MAX_PIXELS
    roomy = ImageLimits(max_pixels=100_000_000, max_side=10_000, max_aspect=20)
    assert images.decode_rgb(samples.raw_png(side, side), roomy, target=64).mode == "RGB"
    assert error(lambda: images.decode_rgb(samples.raw_png(side, side, rows=1), DEFAULTS)) == (
        413,
        "image_too_many_pixels",
    )


def test_pillows_hard_limit_becomes_our_code() -> None:
    roomy = ImageLimits(max_pixels=400_000_000, max_side=20_000, max_aspect=20)
    data = samples.raw_png(14_000, 13_000, rows=1)  # 182 M > twice Pillow's budget
    for path in both_paths(data, roomy):
        status, code = error(path)
        assert (status, code) == (413, "image_too_many_pixels")


# -- everything Pillow raises becomes ours ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(samples.REFUSED))
def test_hostile_files_get_their_code_on_both_paths(name: str) -> None:
    build, status, code = samples.REFUSED[name]
    data = build()
    for path in both_paths(data):
        assert error(path) == (status, code)


def test_the_exif_reproducer_still_breaks_pillow_and_not_us() -> None:
    data = samples.exif_poison_jpeg()
    img = Image.open(io.BytesIO(data))
    img.load()
    with pytest.raises(struct.error):  # if Pillow fixes this, the sample needs replacing
        ImageOps.exif_transpose(img)
    for path in both_paths(data):
        assert error(path) == (415, "corrupt_image")


# -- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, 64])
def test_exif_orientation_is_applied_on_both_paths(target: int | None) -> None:
    # 960 x 480 with target 64: JPEG draft to 240 x 120; left half red, right half blue.
    img = images.decode_rgb(samples.oriented_jpeg((960, 480)), DEFAULTS, target)
    assert img.height == 2 * img.width  # rotated by 270 degrees: portrait
    arr = np.asarray(img).astype(int)
    top, bottom = arr[: img.height // 4], arr[-img.height // 4 :]
    assert top[..., 0].mean() > 180 and top[..., 2].mean() < 60  # red on top
    assert bottom[..., 2].mean() > 180 and bottom[..., 0].mean() < 60


@pytest.mark.parametrize("target", [None, 64])
def test_tiff_orientation_survives_the_high_bit_depth_conversion(target: int | None) -> None:
    ramp = np.tile(np.linspace(0, 65535, 600).astype(np.uint16), (300, 1))  # dark left
    data = encode(Image.fromarray(ramp), "TIFF", tiffinfo={274: 6})
    img = images.decode_rgb(data, DEFAULTS, target)
    assert img.height > img.width
    column = np.asarray(img.convert("L")).astype(int).mean(axis=1)
    assert column[0] < 30 and column[-1] > 225  # the dark side is now on top


# -- faithful pixels --------------------------------------------------------------------------


def gradient_check(img: Image.Image) -> None:
    assert img.mode == "RGB"
    columns = np.asarray(img.convert("L")).astype(float).mean(axis=0)
    edge = max(1, len(columns) // 32)
    assert columns[:edge].mean() < 20, columns[:edge]
    assert columns[-edge:].mean() > 235, columns[-edge:]
    assert np.all(np.diff(columns[::edge]) >= -1)  # it rises left to right
    assert 100 < columns.mean() < 155  # a ramp, not ~all white or all black


@pytest.mark.parametrize("name", sorted(samples.HIGH_BIT_DEPTH))
@pytest.mark.parametrize("target", [None, 64, 16])
def test_high_bit_depth_gradients_are_scaled_not_clipped(name: str, target: int | None) -> None:
    data = samples.HIGH_BIT_DEPTH[name]()
    assert images.inspect(data, DEFAULTS).format in ("png", "tiff")
    gradient_check(images.decode_rgb(data, DEFAULTS, target))


def test_pillows_own_conversion_would_have_been_wrong() -> None:
    """What the gradient check guards against: Pillow clips 16-bit to white, 0..1 to black."""
    sixteen = np.asarray(Image.open(io.BytesIO(samples.png16())).convert("L"))
    assert (sixteen == 255).mean() > 0.9
    floats = np.asarray(Image.open(io.BytesIO(samples.tiff_float())).convert("L"))
    assert floats.max() <= 1


def test_a_dark_16_bit_image_stays_dark_and_a_32_bit_one_is_stretched() -> None:
    """16 bits are a declared range; a 32-bit container declares none (see the docstring)."""
    dark = np.tile(np.linspace(0, 4095, 256).astype(np.uint16), (16, 1))
    assert np.asarray(images.decode_rgb(encode(Image.fromarray(dark), "PNG"), DEFAULTS)).max() < 20
    gradient_check(images.decode_rgb(samples.tiff32(0, 4095), DEFAULTS))
    dim = encode(Image.fromarray(np.full((16, 16), 0.1, dtype=np.float32)), "TIFF")
    assert set(np.asarray(images.decode_rgb(dim, DEFAULTS)).ravel()) == {26}  # 0.1 of 255


@pytest.mark.parametrize(
    "array",
    [np.full((8, 8), 7, dtype=np.int32), np.full((8, 8), np.nan, dtype=np.float32)],
    ids=["constant-int", "all-nan-float"],
)
def test_images_without_a_range_decode_black(array: np.ndarray) -> None:
    img = images.decode_rgb(encode(Image.fromarray(array), "TIFF"), DEFAULTS)
    assert np.asarray(img).max() == 0


@pytest.mark.parametrize(
    ("fmt", "img"),
    [
        ("PNG", Image.new("RGBA", (40, 30), (255, 0, 0, 0))),
        ("PNG", Image.new("LA", (40, 30), (0, 0))),
        ("GIF", Image.new("P", (40, 30), 3)),
        ("WEBP", Image.new("RGBA", (40, 30), (0, 0, 255, 0))),
    ],
    ids=["rgba-png", "la-png", "transparent-gif", "rgba-webp"],
)
@pytest.mark.parametrize("target", [None, 8])
def test_transparency_is_composited_on_white(
    fmt: str, img: Image.Image, target: int | None
) -> None:
    kw = {"transparency": 3} if fmt == "GIF" else {"lossless": True} if fmt == "WEBP" else {}
    decoded = images.decode_rgb(encode(img, fmt, **kw), DEFAULTS, target)
    assert decoded.mode == "RGB" and np.asarray(decoded).min() == 255


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "CMYK"])
def test_every_8_bit_mode_keeps_its_colours(mode: str) -> None:
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 150, 200))
    fmt = {"1": "BMP", "L": "PNG", "P": "GIF", "RGB": "WEBP", "CMYK": "JPEG"}[mode]
    data = encode(img.convert(mode), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    for target in (None, 16):
        arr = np.asarray(images.decode_rgb(data, DEFAULTS, target)).astype(int)
        assert arr[:, : arr.shape[1] // 3].mean() < 30 and arr[:, -arr.shape[1] // 3 :].mean() > 225


# -- bounded work in the worker ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "size"),
    [
        ("PNG", (600, 12_000)),
        ("PNG", (12_000, 3_333)),
        ("JPEG", (6_000, 6_000)),
        ("GIF", (12_000, 600)),
    ],
)
def test_the_worker_decode_is_reduced_before_conversion(
    runtime: ClipRuntime, fmt: str, size: tuple[int, int]
) -> None:
    """Whatever the upload's size, conversion and resizing touch a bounded number of pixels."""
    target = runtime.image_spec.target
    data = encode(Image.new("L" if fmt != "JPEG" else "RGB", size, 90), fmt)
    img = images.decode_rgb(data, DEFAULTS, target)
    bound = 2 * images.REDUCING_GAP * target
    assert min(img.size) < bound and img.width * img.height <= bound**2 * DEFAULTS.max_aspect
    assert runtime.preprocess(img).shape[0] == 3


def test_phone_multi_picture_jpeg_is_accepted_and_decoded_from_its_first_frame() -> None:
    """Many phones write MPO (a JPEG with extra frames); Pillow names it "MPO", not "JPEG"."""
    first, second = Image.new("RGB", (64, 48), (200, 20, 20)), Image.new("RGB", (64, 48), "blue")
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    data = buf.getvalue()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    limits = ImageLimits(max_pixels=10_000_000, max_side=10_000, max_aspect=20.0)
    assert images.inspect(data, limits).format == "mpo"
    red, _green, blue = images.decode_rgb(data, limits).getpixel((10, 10))
    assert red > 150 and blue < 80


def test_a_jpeg_refused_at_full_scale_is_refused_at_the_smallest_dct_scale() -> None:
    """`inspect` checks JPEGs at 1/8 scale: libjpeg still reads every entropy-coded block, so
    damage anywhere is found. Seeded byte damage over six kinds of JPEG must be refused (and
    accepted) exactly as a full-scale decode would; 24,000 cases agreed when this was chosen."""
    rng = random.Random(20261128)
    base = Image.radial_gradient("L").resize((200, 150)).convert("RGB")
    variants = [
        encode(base),
        encode(base, progressive=True),
        encode(base, subsampling=0),
        encode(base, quality=40),
        encode(base.convert("L")),
        encode(base.convert("CMYK")),
    ]

    def loads(data: bytes, draft: bool) -> bool:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                img = Image.open(io.BytesIO(data))
                if draft:
                    img.draft("RGB", (1, 1))
                img.load()
            return True
        except Exception:
            return False

    refused = 0
    for seed in variants:
        for _ in range(120):
            damaged = bytearray(seed)
            for _ in range(rng.choice([1, 2, 4, 8])):
                at = rng.randrange(len(damaged))
                if rng.random() < 0.7:
                    damaged[at] = rng.randrange(256)
                else:
                    del damaged[at : at + rng.randrange(1, 50)]
            full = loads(bytes(damaged), draft=False)
            refused += not full
            assert loads(bytes(damaged), draft=True) == full
    assert refused > 100  # the damage is real: a good share of the cases fail to decode
