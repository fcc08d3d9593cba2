"""Hostile images, built from scratch so every test says exactly what it feeds the service.

Each builder reproduces one class of input from issue 8 that used to escape as a 500 at intake,
fail a whole batch in the worker, hold a worker for seconds, or decode to the wrong pixels.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np
from PIL import Image

from tests.images import encode

PIL_DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's own budget, untouched


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")


def raw_png(width: int, height: int, rows: int | None = None, *, ihdr_len: int = 13) -> bytes:
    """An 8-bit greyscale PNG declaring `width` x `height`, with `rows` rows of real data."""
    ihdr = (width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0]))[
        :ihdr_len
    ]
    row = b"\x00" + bytes(range(256)) * (width // 256) + bytes(range(width % 256))
    n = height if rows is None else rows
    compressor = zlib.compressobj(9)
    # Compress in slices: a 1 x 40,000,000 PNG is 80 MB of rows but ~80 kB compressed.
    parts = []
    step = max(1, 1_000_000 // len(row))
    for start in range(0, n, step):
        parts.append(compressor.compress(row * min(step, n - start)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


@functools.cache
def tall_png(height: int) -> bytes:
    """1 px wide and `height` tall: tiny on the wire, huge once resized to the model's size."""
    return raw_png(1, height)


def truncated(fmt: str, keep: float | int) -> bytes:
    """A noise image cut after `keep` bytes (an int) or that fraction of its length.

    Cut inside the header, Pillow raised `OSError: Truncated File Read` from `Image.open`
    (a 500 at intake); cut in the pixel data, from `load()`.
    """
    data = encode(noise((128, 128)), fmt)
    return data[: keep if isinstance(keep, int) else int(len(data) * keep)]


def truncated_ihdr_png() -> bytes:
    """IHDR cut to 8 of its 13 bytes (the chunk's length and CRC agree with the cut)."""
    return raw_png(64, 64, ihdr_len=8)


def noise(size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def flipped_webp() -> bytes:
    """A lossy WEBP with one byte of its VP8 frame header flipped (found by the fuzz)."""
    data = bytearray(encode(noise(), "WEBP", quality=80))
    data[23] ^= 0xFF  # the VP8 frame's start code: the decoder refuses the bitstream
    return bytes(data)


def bmp_unsupported_header() -> bytes:
    """A BMP whose DIB header claims a size that no BMP version uses."""
    data = bytearray(encode(noise((16, 16)), "BMP"))
    data[14:18] = struct.pack("<I", 20)
    return bytes(data)


def exif_poison_jpeg() -> bytes:
    """A JPEG with EXIF Orientation=6 and a SubIFDs tag (0x014A) typed BYTE, not LONG.

    It decodes, but `ImageOps.exif_transpose` re-serialises the EXIF after rotating, and
    packing the malformed SubIFDs raises `struct.error` (Pillow 13). It passed intake and then
    failed its whole batch in the worker.
    """
    entries = [
        (0x0112, 3, 1, struct.pack("<HH", 6, 0)),  # Orientation: SHORT 6 (rotate 270)
        (0x014A, 1, 1, struct.pack("<I", 8)),  # SubIFDs as BYTE: unwritable
    ]
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        tiff += struct.pack("<HHI", tag, kind, count) + value
    tiff += struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    jpeg = encode(Image.new("RGB", (8, 8), (200, 40, 40)), "JPEG", quality=50)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def oriented_jpeg(size: tuple[int, int] = (96, 48), orientation: int = 6) -> bytes:
    """A well-formed JPEG whose EXIF says to rotate it: the left half red, the right blue."""
    img = Image.new("RGB", size, (220, 20, 20))
    img.paste((20, 20, 220), (size[0] // 2, 0, size[0], size[1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=95, exif=exif)


# -- high bit depth: horizontal gradients, so a decoded result that is flat is plainly wrong ---


def _ramp(dtype: str, low: float, high: float, size: tuple[int, int] = (512, 96)) -> np.ndarray:
    return np.tile(np.linspace(low, high, size[0]).astype(dtype), (size[1], 1))


def png16() -> bytes:
    """16-bit greyscale PNG (Pillow mode I;16), the full 0..65535 range."""
    return encode(Image.fromarray(_ramp("uint16", 0, 65535)), "PNG")


def tiff16(big_endian: bool = False) -> bytes:
    """16-bit greyscale TIFF (I;16, or I;16B from a big-endian file)."""
    ramp = _ramp("uint16", 0, 65535)
    if big_endian:
        img = Image.frombytes("I;16B", (ramp.shape[1], ramp.shape[0]), ramp.astype(">u2").tobytes())
        return encode(img, "TIFF")
    return encode(Image.fromarray(ramp), "TIFF", compression="tiff_deflate")


def tiff32(low: int = 0, high: int = 4095) -> bytes:
    """32-bit integer TIFF (mode I) holding, as such files usually do, fewer bits of data."""
    return encode(Image.fromarray(_ramp("int32", low, high)), "TIFF")


def tiff_float(low: float = 0.0, high: float = 1.0, *, nan: bool = False) -> bytes:
    """32-bit float TIFF (mode F); optionally NaN down the dark edge and +inf the bright one."""
    ramp = _ramp("float32", low, high)
    if nan:
        ramp[:, :3] = np.nan
        ramp[:, -3:] = np.inf
    return encode(Image.fromarray(ramp), "TIFF")


HIGH_BIT_DEPTH = {
    "png-16bit-grey": png16,
    "tiff-16bit-grey": tiff16,
    "tiff-16bit-grey-big-endian": lambda: tiff16(big_endian=True),
    "tiff-32bit-int": tiff32,
    "tiff-32bit-int-negative": lambda: tiff32(-70_000, 70_000),
    "tiff-float-0-1": tiff_float,
    "tiff-float-wide-nan-inf": lambda: tiff_float(-3.0, 500.0, nan=True),
}

# Files the intake must refuse with (status, code); the 1 x 40,000,000 PNG (~80 kB) is built
# once per session.
REFUSED = {
    "truncated-jpeg-header": (lambda: truncated("JPEG", 120), 415, "corrupt_image"),
    "truncated-jpeg-data": (lambda: truncated("JPEG", 0.5), 415, "corrupt_image"),
    "truncated-png-header": (lambda: truncated("PNG", 24), 415, "corrupt_image"),
    "truncated-png-data": (lambda: truncated("PNG", 0.5), 415, "corrupt_image"),
    "truncated-ihdr-png": (truncated_ihdr_png, 415, "corrupt_image"),
    "flipped-webp": (flipped_webp, 415, "corrupt_image"),
    "bmp-unsupported-header": (bmp_unsupported_header, 415, "corrupt_image"),
    "exif-poison-jpeg": (exif_poison_jpeg, 415, "corrupt_image"),
    "png-bomb-20000x20000": (
        lambda: raw_png(20_000, 20_000, rows=64),
        413,
        "image_too_many_pixels",
    ),
    "png-1x100000": (lambda: tall_png(100_000), 413, "image_side_too_large"),
    "png-1x40000000": (lambda: tall_png(40_000_000), 413, "image_side_too_large"),
    "png-1x5000": (lambda: tall_png(5_000), 413, "image_aspect_ratio_too_large"),
}
