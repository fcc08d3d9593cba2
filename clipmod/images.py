"""Safe image inspection and decoding.

Uploads are hostile until proven otherwise. Every image is checked against a pixel budget
before its pixels are decoded (a 50-kB PNG can expand to gigabytes), decoded fully once at
intake so a corrupt file is refused with 415 instead of failing later in a worker, and decoded
again in the worker under the same guards.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from clipmod.errors import PayloadTooLarge, UnsupportedMedia

# We enforce our own budget (settings.max_image_pixels); PIL's global check would only warn.
Image.MAX_IMAGE_PIXELS = None

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"})

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


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedMedia(
            f"not a decodable image (detected: {sniff(data)})", code="unsupported_media_type"
        ) from None
    if img.format not in ACCEPTED_FORMATS:
        raise UnsupportedMedia(
            f"image format {img.format} is not accepted (accepted: "
            f"{', '.join(sorted(ACCEPTED_FORMATS))})",
            code="unsupported_image_format",
        )
    width, height = img.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            code="image_too_many_pixels",
        )
    return img


def inspect(data: bytes, max_pixels: int) -> ImageInfo:
    """Validate an upload: known format, within the pixel budget, and fully decodable."""
    img = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnsupportedMedia(f"corrupt {img.format} image: {exc}", code="corrupt_image") from None
    return ImageInfo(format=str(img.format).lower(), width=img.width, height=img.height)


def decode_rgb(data: bytes, max_pixels: int, target: int | None = None) -> Image.Image:
    """Decode to RGB for the model; `target` lets JPEG decode at a reduced scale (much faster)."""
    img = _open(data, max_pixels)
    if target and img.format == "JPEG":
        # draft() picks the smallest DCT scale that stays >= the requested size.
        img.draft("RGB", (target, target))
    try:
        img.load()
        img = ImageOps.exif_transpose(img) or img
        if img.mode in ("RGBA", "LA", "P"):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedMedia(f"corrupt image: {exc}", code="corrupt_image") from None
