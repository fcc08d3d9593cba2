"""`api.multipart`'s fast path against werkzeug's parser: where it answers, it answers alike.

The fast path may decline any body (intake then parses with werkzeug, errors and all); what it
must never do is accept a body werkzeug refuses, or read other values than werkzeug does.
"""

from __future__ import annotations

import io

import pytest
from werkzeug.formparser import FormDataParser

from api import multipart

B = "clipmodtestboundary"
JPEG = b"\xff\xd8\xff\xe0 not really a jpeg \r\n -- \r\n--x \x00\xff"


def body(*parts: bytes, boundary: str = B, end: bytes = b"\r\n") -> bytes:
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return out + b"--" + boundary.encode() + b"--" + end


def field(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def upload(data: bytes = JPEG, filename: str = "x.jpg", extra: bytes = b"") -> bytes:
    return (
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode()
        + b"Content-Type: image/jpeg\r\n"
        + extra
        + b"\r\n"
        + data
    )


def werkzeug(data: bytes, boundary: str = B) -> tuple[dict[str, list[str]], list[bytes]] | str:
    """What intake's werkzeug path sees: every field value, every file's bytes; or the error."""
    parser = FormDataParser(silent=False, max_form_memory_size=500_000)
    try:
        _, form, files = parser.parse(
            io.BytesIO(data), "multipart/form-data", len(data), {"boundary": boundary}
        )
    except Exception as exc:
        return type(exc).__name__
    images = []
    for part in files.getlist("file"):
        if part:
            images.append(part.read())
        part.close()
    return {k: form.getlist(k) for k in form}, images


COMMON = {
    "file and external_id (curl, requests)": body(field("external_id", b"abc-1"), upload()),
    "file only, no trailing CRLF": body(upload(), end=b""),
    "every text field": body(
        field("text", "caf\u00e9 \U0001f600".encode()),
        field("external_id", b"e"),
        field("metadata", b'{"a": [1, 2]}'),
        upload(b""),
    ),
    "text only": body(field("text", b"hello\r\nworld")),
    "empty text value": body(field("text", b""), upload()),
    "image_url": body(field("image_url", b"https://example.com/a.png")),
    "binary file holding CRLF and dashes": body(upload(b"\r\n--" + B[:-1].encode() + b"\r\n")),
    "header names in another case": body(
        b'content-disposition: form-data; name="file"; filename="a b.png"\r\n'
        b"CONTENT-TYPE: image/png\r\n\r\n" + JPEG
    ),
}


@pytest.mark.parametrize("data", COMMON.values(), ids=COMMON.keys())
def test_the_common_shapes_take_the_fast_path_with_werkzeugs_values(data: bytes) -> None:
    fast = multipart.parse(data, B)
    assert fast is not None
    fields, image = fast
    expected = werkzeug(data)
    assert not isinstance(expected, str), expected
    assert {k: [v] for k, v in fields.items()} == expected[0]
    assert ([image] if image is not None else []) == expected[1]


DECLINED = {
    "unknown field": body(field("texts", b"x"), upload()),
    "repeated field": body(field("text", b"a"), field("text", b"b")),
    "repeated file": body(upload(), upload()),
    "file part without a filename": body(field("file", b"abc")),
    "empty filename": body(upload(filename="")),
    "text part with a filename": body(
        b'Content-Disposition: form-data; name="text"; filename="t.txt"\r\n\r\nhi'
    ),
    "text part with a content type (its charset could differ)": body(
        b'Content-Disposition: form-data; name="text"\r\nContent-Type: text/plain; '
        b"charset=latin-1\r\n\r\ncaf\xe9"
    ),
    "not UTF-8": body(field("text", b"caf\xe9")),
    "a header werkzeug reads and we do not": body(
        upload(extra=b"Content-Transfer-Encoding: base64\r\n")
    ),
    "folded header": body(
        b'Content-Disposition: form-data;\r\n name="text"\r\n\r\nhi', field("external_id", b"e")
    ),
    "no Content-Disposition": body(b"Content-Type: text/plain\r\n\r\nhi"),
    "part without headers": body(b"\r\nhi"),
    "LF-only line breaks": body(upload()).replace(b"\r\n", b"\n"),
    "boundary after a bare LF inside the file": body(
        upload(JPEG + b"\n--" + B.encode() + b"\r\n" + field("text", b"smuggled"))
    ),
    "boundary with trailing whitespace": body(upload()).replace(
        b"--" + B.encode() + b"\r\n", b"--" + B.encode() + b"  \r\n"
    ),
    "preamble": b"preamble\r\n" + body(upload()),
    "epilogue": body(upload()) + b"epilogue",
    "no closing boundary": body(upload())[: -len(B) - 6],
    "quoted filename with an escape": body(upload(filename='a\\"b.jpg')),
    "percent in the filename": body(upload(filename="a%22b.jpg")),
    "text field larger than MAX_FIELD_BYTES": body(
        field("text", b"x" * (multipart.MAX_FIELD_BYTES + 1))
    ),
    "empty body": b"",
    "only the closing boundary": b"--" + B.encode() + b"--\r\n",
    "non-ASCII header value": body(upload(extra="X-Note: \u00e9\r\n".encode())),
}


@pytest.mark.parametrize("data", DECLINED.values(), ids=DECLINED.keys())
def test_anything_else_is_left_to_werkzeug(data: bytes) -> None:
    assert multipart.parse(data, B) is None


@pytest.mark.parametrize("boundary", ["", "a" * 71, "with space ", 'quo"te', "caf\u00e9"])
def test_unusual_boundaries_are_left_to_werkzeug(boundary: str) -> None:
    assert multipart.parse(body(upload(), boundary=boundary), boundary) is None


def test_the_boundary_is_matched_exactly() -> None:
    data = body(field("text", b"hi"), boundary=B)
    assert multipart.parse(data, B + "x") is None
    assert multipart.parse(data, B[:-1]) is None


def test_mutated_bodies_are_declined_or_read_as_werkzeug_reads_them() -> None:
    """Flip, drop and insert bytes (CR, LF, dash, quote, the boundary) in real bodies."""
    import random

    rng = random.Random(15)
    seeds = list(COMMON.values())
    pieces = [b"\r", b"\n", b"-", b'"', b";", b" ", b"\r\n", B.encode(), b"--" + B.encode()]
    accepted = 0
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.4:
                data[at:at] = rng.choice(pieces)
            elif op < 0.7:
                del data[at : at + rng.randint(1, 4)]
            elif at < len(data):
                data[at] = rng.randrange(256)
        fast = multipart.parse(bytes(data), B)
        if fast is None:
            continue
        accepted += 1
        expected = werkzeug(bytes(data))
        assert not isinstance(expected, str), (bytes(data), expected)
        fields, image = fast
        assert {k: [v] for k, v in fields.items()} == expected[0], bytes(data)
        assert ([image] if image is not None else []) == expected[1], bytes(data)
    assert accepted > 100  # the mutations leave many bodies in the plain shape
