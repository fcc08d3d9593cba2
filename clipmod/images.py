"""Safe image inspection and decoding.

Uploads are hostile until proven otherwise. Every image is checked against a pixel budget and
geometry limits read from its header before its pixels are decoded (a 50-kB PNG can expand to
gigabytes; a 1 x 100,000 px PNG becomes 64 x 6,400,000 px once resized to the model's shortest
edge). Intake and worker run the same decode (`_decode`: load, EXIF transpose, reduction, mode
conversion), so a file the intake accepted has already decoded once and a file that cannot
decode is refused with 415 instead of failing later in a worker. Any exception Pillow raises
on the way becomes one of our own errors: decoders raise a wide and version-dependent set of
exception types (`OSError`, `ValueError`, `SyntaxError`, `struct.error`, `IndexError`, ...),
and a list of them would always be one short.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipmod.errors import ClipmodError, PayloadTooLarge, UnsupportedMedia

if TYPE_CHECKING:
    from clipmod.settings import Settings

# MPO is how Pillow names the multi-picture JPEGs many phone cameras write: a JPEG whose first
# frame is the photo. Refusing it would refuse ordinary phone uploads.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
JPEG_FAMILY = frozenset({"JPEG", "MPO"})

# Reduce (box-average) to no less than this many times the model's input size before the
# final resample: Pillow's own `reducing_gap` default, indistinguishable from a full resample.
REDUCING_GAP = 2

# The intake reduces to about this size before converting (see `inspect`).
INSPECT_SIZE = 256

_STRIP_PIXELS = 1 << 20

# Modes whose alpha channel is composited on white: a transparent background reads as the
# page it is shown on, not as black.
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

# Enough to name what a client sent us when it is not an image we take.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"GIF8", "image/gif"),
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"RIFF", "audio/video (RIFF)"),
    (b"\x00\x00\x00", "video/mp4"),
    (b"<!DOCTYPE", "text/html"),
    (b"<html", "text/html"),
    (b"<svg", "image/svg+xml"),
    (b"<?xml", "application/xml"),
    (b"{", "application/json"),
)

# `warnings.catch_warnings` swaps the process-wide filter list; the lock keeps our own decode
# threads from restoring each other's snapshots. It only covers `Image.open` (header parsing),
# so decoding itself stays parallel.
_OPEN_LOCK = threading.Lock()


def sniff(data: bytes) -> str:
    """A best-effort media type from magic bytes, for error messages only."""
    head = data[:16].lstrip()
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if not data:
        return "empty"
    try:
        data[:512].decode("utf-8")
        return "text/plain"
    except UnicodeDecodeError:
        return "application/octet-stream"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost, checked from its header before any pixel is decoded.

    `max_pixels` bounds the decoded size; `max_side` and `max_aspect` bound the shape, because
    preprocessing scales the shortest edge up or down to the model's input size and a very
    elongated image then becomes enormous (1 x 100,000 px -> 64 x 6,400,000 px).
    """

    max_pixels: int
    max_side: int
    max_aspect: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            max_pixels=settings.max_image_pixels,
            max_side=settings.max_image_side,
            max_aspect=settings.max_aspect_ratio,
        )


def _too_many_pixels(width: int, height: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"image is {width}x{height} = {width * height} pixels; the limit is {limit}",
        code="image_too_many_pixels",
    )


def _reason(exc: BaseException) -> str:
    """A short, single-line cause for a client: Pillow's messages can be long or empty."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Parse the header only, and refuse what we would not decode."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow warns above its own global budget (~89 M pixels); ours comes next and
            # decides, so an operator's larger CLIPMOD_MAX_IMAGE_PIXELS still works.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            f"not a decodable image (detected: {sniff(data)})", code="unsupported_media_type"
        ) from None
    except Image.DecompressionBombError:
        # Above twice Pillow's global budget Pillow refuses by itself, whatever ours says.
        raise PayloadTooLarge(
            f"image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, the most the "
            f"decoder accepts (this service's limit: {limits.max_pixels})",
            code="image_too_many_pixels",
        ) from None
    except Exception as exc:
        raise UnsupportedMedia(f"corrupt image: {_reason(exc)}", code="corrupt_image") from None
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedMedia(
            f"image format {img.format} is not accepted (accepted: "
            f"{', '.join(sorted(ACCEPTED_FORMATS))})",
            code="unsupported_image_format",
        )
    _check_geometry(img.size, limits)
    return img


def _check_geometry(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise UnsupportedMedia(
            f"corrupt image: declared size {width}x{height}", code="corrupt_image"
        )
    if width * height > limits.max_pixels:
        raise _too_many_pixels(width, height, limits.max_pixels)
    if max(width, height) > limits.max_side:
        raise PayloadTooLarge(
            f"image is {width}x{height}; the longest side may be at most {limits.max_side} px",
            code="image_side_too_large",
        )
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise PayloadTooLarge(
            f"image is {width}x{height}, an aspect ratio of {aspect:.1f}; the limit is "
            f"{limits.max_aspect:g}",
            code="image_aspect_ratio_too_large",
        )


def _strips(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """The image as float32 rows, about a million pixels at a time.

    Working in strips keeps a 40 M-pixel float image from needing several full-size float
    copies at once; only the 8-bit result is whole.
    """
    width, height = img.size
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        yield top, np.array(img.crop((0, top, width, bottom)), dtype=np.float32)  # a copy


def _value_range(img: Image.Image) -> tuple[float, float] | None:
    """Smallest and largest finite value, or None when there is none."""
    low, high = np.inf, -np.inf
    for _, strip in _strips(img):
        finite = strip[np.isfinite(strip)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return (low, high) if low <= high else None


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale -> 8-bit, scaled rather than clipped.

    Pillow's own `convert("L")` clips these to 0..255, so a 16-bit photo came out ~all white
    and a 0..1 float image all black, and the verdict was about a blank image. The rules are
    the ones image viewers use, so the model sees what a person opening the file would see:

    - `I;16*` (16-bit PNG/TIFF): the format declares 16 bits, so 0..65535 -> 0..255.
    - `F` (float TIFF): values within 0..1 use that conventional range (a dark float image
      stays dark); anything else is stretched from its finite min to its finite max, because
      floats declare no range. NaN counts as the minimum, +/-inf as the extremes.
    - `I` (32-bit integer TIFF): its type range (+/-2^31) would turn real data, which rarely
      uses more than 16 bits, into one flat grey, and the file declares no narrower range, so
      it is stretched from its min to its max. That also means content cannot be hidden in the
      low bits of a 32-bit container.

    A constant `I`/`F` image (no range to stretch) becomes black.
    """
    if img.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        found = _value_range(img)
        if found is None:
            return Image.new("L", img.size, 0)
        low, high = found
        if img.mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
    scale = np.float32(255.0 / (high - low) if high > low else 0.0)
    out = np.empty((img.height, img.width), dtype=np.uint8)
    for top, strip in _strips(img):
        np.nan_to_num(strip, copy=False, nan=low, posinf=high, neginf=low)
        strip -= np.float32(low)
        strip *= scale
        np.clip(strip, 0, 255, out=strip)
        out[top : top + len(strip)] = np.rint(strip)
    return Image.fromarray(out)


def _reducible(img: Image.Image) -> Image.Image:
    """Convert to a mode that `Image.reduce` averages correctly.

    Reduce cannot handle 1-bit and 16-bit modes, and on a palette image it would average
    palette indices. `I` and `F` reduce fine and are scaled after reducing, on fewer pixels.
    """
    if img.mode.startswith("I;16"):
        return _high_bit_depth_to_l(img)
    if img.mode == "PA" or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    if img.mode == "P":
        return img.convert("RGB")
    if img.mode == "1":
        return img.convert("L")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_bit_depth_to_l(img)
    if img.mode == "PA" or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        # Pillow converts premultiplied La only to LA.
        rgba = img.convert("LA").convert("RGBA") if img.mode == "La" else img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def _decode(
    data: bytes, limits: ImageLimits, target: int | None, *, draft: int | None
) -> tuple[Image.Image, ImageInfo]:
    """The one decode path of intake and worker; returns the RGB image and the header's facts.

    Decoding itself is bounded by the header checks (`max_pixels`). With a `target`, every
    image is box-reduced right after decoding and EXIF rotation to a shortest side below
    2 * REDUCING_GAP * target, so conversion and the model's resize touch at most
    (2 * REDUCING_GAP * target)^2 * max_aspect pixels, whatever the upload's size. A JPEG
    decodes at the smallest DCT scale that keeps both sides >= `draft` (None: full scale).
    """
    img = _open(data, limits)
    fmt = str(img.format)
    info = ImageInfo(format=fmt.lower(), width=img.width, height=img.height)
    try:
        if draft and fmt in JPEG_FAMILY:
            # draft() picks the smallest DCT scale that stays >= the requested size.
            img.draft("RGB", (draft, draft))
        img.load()
        # In place: no full-size copy when there is nothing to rotate. Before any conversion,
        # because TIFF keeps its orientation in tags that a converted copy loses.
        ImageOps.exif_transpose(img, in_place=True)
        if target:
            img = _reducible(img)
            factor = min(img.size) // (REDUCING_GAP * target)
            if factor > 1:
                img = img.reduce(factor)
        return _to_rgb(img), info
    except ClipmodError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Only raised here where the process turns warnings into errors, or for a tile or
        # frame larger than the header said.
        raise _too_many_pixels(*img.size, limits.max_pixels) from None
    except Exception as exc:
        raise UnsupportedMedia(
            f"corrupt {fmt} image: {_reason(exc)}", code="corrupt_image"
        ) from None


def inspect(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Validate an upload: a format we take, within the limits, and decodable by the worker.

    It runs the worker's own steps (load, EXIF rotation, reduction, conversion), so whatever
    the worker later meets has already decoded once. JPEG decodes at its smallest DCT scale
    (1/8): libjpeg still reads every marker and every entropy-coded block, which is where a
    damaged or truncated JPEG fails, and only the inverse DCT and colour conversion shrink (a
    224 px upload checks in half the CPU of a full-scale decode, the largest single cost of
    intake). Conversion runs after reducing to INSPECT_SIZE, so checking any upload costs about
    what loading it does. The size reported is the header's.
    """
    _, info = _decode(data, limits, INSPECT_SIZE, draft=1)
    return info


# JPEG colour modes the GPU decoder turns into RGB as Pillow does (CMYK and YCCK are not).
_GPU_JPEG_MODES = frozenset({"RGB", "L"})
_ORIENTATION = 0x0112


def plain_jpeg(data: bytes, limits: ImageLimits) -> tuple[int, int] | None:
    """The (width, height) of a JPEG a GPU decoder (`workers.gpujpeg`) gives the pixels Pillow
    would, else None.

    Only a single-frame JPEG in YCbCr or greyscale, within the limits, with no EXIF rotation
    to apply: nvJPEG ignores EXIF and converts CMYK differently. Never raises: an image this
    answers None for takes the CPU decoders, which give a broken one its own error code.
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    try:
        img = _open(data, limits)
        plain = (
            img.format == "JPEG"
            and img.mode in _GPU_JPEG_MODES
            and img.getexif().get(_ORIENTATION, 1) == 1
        )
    except Exception:
        return None
    return img.size if plain else None


def decode_rgb(data: bytes, limits: ImageLimits, target: int | None = None) -> Image.Image:
    """Decode to RGB for the model; `target` (the model's input size) bounds the work.

    Without a target the image keeps its full resolution.
    """
    img, _ = _decode(data, limits, target, draft=target)
    return img
