"""A fast path for the multipart upload every platform sends: a few named fields and one file.

Werkzeug's streaming multipart parser cost more than the rest of request parsing together
(an event object per chunk, header parsing per part, a spooled file per upload). Most uploads
are one plain shape: `--B CRLF`, parts of `Content-Disposition: form-data; name="..."` (plus
`; filename="..."` and a `Content-Type` on the file part), `CRLF --B`, ending `--B--`. For that
shape, a split on the delimiter reads the same fields and bytes werkzeug would.

Anything else answers None, and the caller parses the body with werkzeug as before: an unknown
or repeated field name, a header other than those two, folded headers, LF-only line breaks, a
preamble or epilogue, the boundary string anywhere but in a delimiter, a field value that is
not UTF-8 or is larger than `MAX_FIELD_BYTES`. So every error, limit and message stays
werkzeug's and intake's own, word for word; this path only ever accepts what werkzeug accepts,
with the same values (`tests/api/test_multipart.py` checks both against each other).
"""

from __future__ import annotations

import re

FILE_FIELD = "file"
# The order is the order intake reports a repeated field in.
TEXT_FIELDS = ("text", "external_id", "metadata", "image_url")
# Far below Flask's MAX_FORM_MEMORY_SIZE (werkzeug's 413 for a large text field): a field this
# large goes through werkzeug, so that limit and its answer stay werkzeug's.
MAX_FIELD_BYTES = 64 * 1024

_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,./:=?-]{1,70}")
_HEADER = re.compile(rb"([A-Za-z-]+):[ \t]*([ -~]*)")
_DISPOSITION = re.compile(r'form-data; name="([a-z_]+)"(?:; filename="([ -!#-$&-\[\]-~]+)")?')


def parse(body: bytes, boundary: str) -> tuple[dict[str, str], bytes | None] | None:
    """(text fields, file bytes or None), or None when the body is not the plain shape."""
    if not _BOUNDARY.fullmatch(boundary):
        return None
    marker = b"--" + boundary.encode("ascii")
    if not body.startswith(marker + b"\r\n"):
        return None
    end = body.rfind(b"\r\n" + marker + b"--")
    if end < 0 or body[end + len(marker) + 4 :] not in (b"", b"\r\n"):
        return None
    parts = body[len(marker) + 2 : end].split(b"\r\n" + marker + b"\r\n")
    # Every occurrence of the boundary must be one of the delimiters just split on: werkzeug
    # also ends a part at an LF-only or whitespace-padded boundary line, which this path does
    # not look for.
    if body.count(marker) != len(parts) + 1:
        return None
    fields: dict[str, str] = {}
    image: bytes | None = None
    for part in parts:
        parsed = _part(part)
        if parsed is None:
            return None
        name, is_file, value = parsed
        if name in fields or (name == FILE_FIELD and image is not None):
            return None  # repeated: intake's own check words the error
        if is_file:
            image = value
        else:
            try:
                fields[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                return None  # werkzeug substitutes U+FFFD; let it
    return fields, image


def _part(part: bytes) -> tuple[str, bool, bytes] | None:
    head, sep, value = part.partition(b"\r\n\r\n")
    if not sep:
        return None
    disposition, content_type = None, False
    for line in head.split(b"\r\n"):
        match = _HEADER.fullmatch(line)
        if match is None:
            return None
        key = match.group(1).lower()
        if key == b"content-disposition" and disposition is None:
            disposition = match.group(2).rstrip(b" \t").decode("ascii")
        elif key == b"content-type" and not content_type:
            content_type = True
        else:
            return None
    found = _DISPOSITION.fullmatch(disposition) if disposition is not None else None
    if found is None:
        return None
    name, filename = found.group(1), found.group(2)
    if name == FILE_FIELD and filename is not None:
        return name, True, value
    if name in TEXT_FIELDS and filename is None and not content_type:
        if len(value) > MAX_FIELD_BYTES:
            return None
        return name, False, value
    return None
