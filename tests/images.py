"""Test images: drawn from the demo world where it matters, synthetic bytes where it doesn't."""

from __future__ import annotations

import io
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def solid(
    size: tuple[int, int] = (96, 80),
    colour: tuple[int, int, int] = (200, 40, 40),
    fmt: str = "JPEG",
) -> bytes:
    return encode(Image.new("RGB", size, colour), fmt)


def png_bomb(side: int = 20_000) -> bytes:
    """A tiny PNG declaring `side`² pixels: a few kB on the wire, gigabytes if decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit greyscale
    row = b"\x00" + b"\x00" * side
    data = zlib.compress(row * 64, 9)  # far fewer rows than declared: never read past them
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = solid((256, 256))
    return data[: len(data) // 2]


PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
