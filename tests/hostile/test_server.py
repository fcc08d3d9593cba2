"""Hostile input through a real `clipmod serve`: waitress, Flask and the database, as deployed.

Every refusal must be a 4xx in the JSON error shape with a stable code, and must store nothing:
no item row and no blob file. Requests are written as raw bytes (raw sockets or `http.client`)
so that malformed framing reaches waitress untouched, and so that JSON escapes such as
`\\ud800` arrive exactly as an attacker would send them.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from api.app import max_body_bytes
from clipmod import keys
from clipmod.db import make_engine, make_sessionmaker, transaction
from clipmod.models import Item
from clipmod.settings import Settings
from tests import images
from tests.e2e.conftest import postgres_url, production_settings  # noqa: F401
from tests.hostile import samples
from tests.hostile.conftest import LiveServer, start_server
from tests.hostile.fuzz import CORPUS

BOUNDARY = "clipmodHostileBoundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
JSON = "application/json"
_colours = itertools.count(1)


def fresh_image() -> bytes:
    """An image no earlier request stored, so a blob written by mistake shows up as a new file."""
    n = next(_colours)
    return images.solid((32, 24), (n % 256, n // 256 % 256, 99), fmt="PNG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def error_code(self) -> str:
        """The code of a JSON error reply, after checking the whole error contract."""
        assert self.headers.get_content_type() == "application/json", self.headers.items()
        body = json.loads(self.body)
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message"} and body["error"]["message"], body
        return str(body["error"]["code"])


def exchange(server: LiveServer, raw: bytes, timeout: float = 30) -> Reply:
    """Send raw bytes on a fresh connection and read one response."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(raw)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return Reply(resp.status, resp.headers, resp.read())


def post(server: LiveServer, key: str, body: bytes, content_type: str) -> Reply:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
        conn.request("POST", "/v1/items", body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def part(name: str | None, value: bytes, filename: str | None = None) -> bytes:
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def multipart(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def file_part(data: bytes | None = None) -> bytes:
    return part("file", data if data is not None else fresh_image(), "x.png")


@dataclass
class Stored:
    """What the server's database and blob directory hold, to prove a refusal stored nothing."""

    engine: Engine
    blob_dir: Path

    def counts(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(func.count(Item.id))).scalar_one()
        blobs = sum(1 for p in self.blob_dir.rglob("*") if p.is_file())
        return rows, blobs


@dataclass
class Target:
    server: LiveServer
    key: str
    stored: Stored

    def post(self, body: bytes, content_type: str) -> Reply:
        return post(self.server, self.key, body, content_type)

    def refused(self, body: bytes, content_type: str, status: int, code: str) -> Reply:
        before = self.stored.counts()
        reply = self.post(body, content_type)
        assert reply.status < 500, (reply.status, reply.body[:300])
        assert (reply.status, reply.error_code()) == (status, code), reply.body[:300]
        assert self.stored.counts() == before, "a refused request stored something"
        return reply


def _target(server: LiveServer) -> Iterator[Target]:
    engine = make_engine(server.settings.database_url)
    with transaction(make_sessionmaker(engine)) as session:
        key = keys.create_key(session, f"hostile-{next(_colours)}")
    try:
        yield Target(server, key, Stored(engine, server.settings.blob_dir))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def target(live_server: LiveServer) -> Iterator[Target]:
    yield from _target(live_server)


# -- hostile bodies: (id, content type, body factory, status, code) -----------------------------

Case = tuple[str, str, Callable[[], bytes], int, str]


def _json(text: str) -> Callable[[], bytes]:
    """A JSON body written by hand (escapes kept), with a fresh image so a late refusal shows."""
    return lambda: ('{"image_base64": "' + b64(fresh_image()) + '", ' + text + "}").encode()


# The cases that reach the database as strings or JSON: refused on SQLite and PostgreSQL alike.
UNSTORABLE: list[Case] = [
    ("json-text-lone-surrogate", JSON, _json(r'"text": "a\ud800b"'), 422, "invalid_input"),
    ("json-text-low-surrogate", JSON, _json(r'"text": "\udc00"'), 422, "invalid_input"),
    ("json-external-id-surrogate", JSON, _json(r'"external_id": "e\ud83d"'), 422, "invalid_input"),
    (
        "json-metadata-key-surrogate",
        JSON,
        _json(r'"metadata": {"\ud800": 1}'),
        422,
        "invalid_input",
    ),
    ("json-text-nul", JSON, _json(r'"text": "a\u0000b"'), 422, "invalid_input"),
    ("json-external-id-nul", JSON, _json(r'"external_id": "e\u0000"'), 422, "invalid_input"),
    ("json-metadata-nul", JSON, _json(r'"metadata": {"k": ["x\u0000"]}'), 422, "invalid_input"),
    ("json-metadata-nan", JSON, _json('"metadata": {"k": NaN}'), 422, "invalid_json"),
    ("json-metadata-infinity", JSON, _json('"metadata": {"k": Infinity}'), 422, "invalid_json"),
    ("json-metadata-neg-inf", JSON, _json('"metadata": {"k": -Infinity}'), 422, "invalid_json"),
    ("json-metadata-overflow", JSON, _json('"metadata": {"k": 1e999}'), 422, "invalid_json"),
    (
        "multipart-text-nul",
        MULTIPART,
        lambda: multipart(part("text", b"a\x00b"), file_part()),
        422,
        "invalid_input",
    ),
    (
        "multipart-external-id-nul",
        MULTIPART,
        lambda: multipart(part("external_id", b"\x00"), file_part()),
        422,
        "invalid_input",
    ),
    (
        "multipart-metadata-surrogate",
        MULTIPART,
        lambda: multipart(part("metadata", rb'{"k": "\ud800"}'), file_part()),
        422,
        "invalid_input",
    ),
    (
        "multipart-metadata-nan",
        MULTIPART,
        lambda: multipart(part("metadata", b'{"k": NaN}'), file_part()),
        422,
        "invalid_json",
    ),
]

SHAPE: list[Case] = [
    ("json-metadata-5000-deep", JSON, _json(f'"metadata": {deep(5000)}'), 422, "invalid_json"),
    ("json-metadata-17-deep", JSON, _json(f'"metadata": {deep(17)}'), 422, "invalid_json"),
    ("json-body-5000-deep", JSON, lambda: b"[" * 5000 + b"]" * 5000, 422, "invalid_json"),
    ("json-not-json", JSON, lambda: b'{"text": ', 422, "invalid_json"),
    (
        "multipart-metadata-5000-deep",
        MULTIPART,
        lambda: multipart(part("metadata", deep(5000).encode()), file_part()),
        422,
        "invalid_json",
    ),
    (
        "multipart-metadata-17-deep",
        MULTIPART,
        lambda: multipart(part("metadata", deep(17).encode()), file_part()),
        422,
        "invalid_json",
    ),
    (
        "json-zero-width-text",
        JSON,
        lambda: json.dumps({"text": "\u200b\u200c\u200d\u2060\ufeff \t\u200e"}).encode(),
        422,
        "nothing_to_score",
    ),
    (
        "multipart-zero-width-text",
        MULTIPART,
        lambda: multipart(part("text", "\u200b\u2060\ufeff\n".encode())),
        422,
        "nothing_to_score",
    ),
    (
        "multipart-two-files",
        MULTIPART,
        lambda: multipart(file_part(), file_part()),
        422,
        "invalid_input",
    ),
    (
        "multipart-nameless-part",
        MULTIPART,
        lambda: multipart(part(None, b"hello"), file_part()),
        422,
        "invalid_input",
    ),
    (
        "multipart-nameless-file",
        MULTIPART,
        lambda: multipart(part(None, fresh_image(), "x.png")),
        422,
        "invalid_input",
    ),
    (
        "multipart-file-as-a-field",
        MULTIPART,
        lambda: multipart(part("file", fresh_image())),
        422,
        "invalid_input",
    ),
    (
        "multipart-two-texts",
        MULTIPART,
        lambda: multipart(part("text", b"a"), part("text", b"b"), file_part()),
        422,
        "invalid_input",
    ),
    (
        "multipart-wrong-boundary",
        "multipart/form-data; boundary=notTheOneUsed",
        lambda: multipart(part("text", b"hello"), file_part()),
        400,
        "malformed_body",
    ),
    (
        "multipart-garbage",
        MULTIPART,
        lambda: b"\x00\xffthis is not a multipart body at all" * 50,
        400,
        "malformed_body",
    ),
    (
        "multipart-truncated",
        MULTIPART,
        lambda: multipart(part("text", b"hello"), file_part())[:-40],
        400,
        "malformed_body",
    ),
    (
        "multipart-no-boundary",
        "multipart/form-data",
        lambda: multipart(part("text", b"hello")),
        400,
        "malformed_body",
    ),
    (
        "json-base64-with-spaces",
        JSON,
        lambda: json.dumps({"image_base64": " ".join(b64(fresh_image()))}).encode(),
        422,
        "invalid_input",
    ),
    (
        "json-base64-pdf-data-uri",
        JSON,
        lambda: json.dumps(
            {"image_base64": "data:application/pdf;base64," + b64(fresh_image())}
        ).encode(),
        422,
        "invalid_input",
    ),
]


@pytest.mark.parametrize(
    ("content_type", "make_body", "status", "code"),
    [pytest.param(*c[1:], id=c[0]) for c in UNSTORABLE + SHAPE],
)
def test_hostile_body_is_refused_and_nothing_is_stored(
    target: Target, content_type: str, make_body: Callable[[], bytes], status: int, code: str
) -> None:
    target.refused(make_body(), content_type, status, code)


def test_a_nameless_part_is_named_as_the_problem(target: Target) -> None:
    body = multipart(part(None, b"hello"), file_part())
    reply = target.refused(body, MULTIPART, 422, "invalid_input")
    message = json.loads(reply.body)["error"]["message"]
    assert "without a name" in message and "None" not in message


def test_malformed_multipart_says_the_body_is_malformed(target: Target) -> None:
    body = multipart(part("text", b"hello"))
    reply = target.refused(body, "multipart/form-data; boundary=other", 400, "malformed_body")
    assert "malformed multipart" in json.loads(reply.body)["error"]["message"]


# -- accepted forms ----------------------------------------------------------------------------


def _stored_item(target: Target, item_id: str) -> Item:
    with make_sessionmaker(target.stored.engine)() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda s: "\n".join(s[i : i + 76] for i in range(0, len(s), 76)), id="gnu"),
        pytest.param(lambda s: "\r\n".join(s[i : i + 64] for i in range(0, len(s), 64)), id="crlf"),
        pytest.param(lambda s: "data:image/png;base64," + s, id="data-uri"),
        pytest.param(lambda s: "DATA:image/png;base64," + s[:50] + "\n" + s[50:], id="both"),
    ],
)
def test_base64_as_tools_print_it_is_accepted(target: Target, encode: Callable[[str], str]) -> None:
    image = images.solid((300, 200), (1, 2, next(_colours) % 256), fmt="PNG")
    assert len(b64(image)) > 2 * 76  # several lines
    reply = target.post(json.dumps({"image_base64": encode(b64(image))}).encode(), JSON)
    assert reply.status == 202, reply.body
    item = _stored_item(target, json.loads(reply.body)["id"])
    assert item.image_sha256 == hashlib.sha256(image).hexdigest()
    assert item.image_format == "png"


def test_zero_width_text_beside_an_image_is_stored_as_no_text(target: Target) -> None:
    body = multipart(part("text", "\u200b\u200b".encode()), file_part())
    reply = target.post(body, MULTIPART)
    assert reply.status == 202, reply.body
    assert _stored_item(target, json.loads(reply.body)["id"]).text is None


def test_reused_external_id_with_other_content_is_a_conflict(target: Target) -> None:
    image = fresh_image()
    body = {"image_base64": b64(image), "text": "hello", "external_id": "conflict-1"}
    first = target.post(json.dumps(body).encode(), JSON)
    assert first.status == 202, first.body
    item_id = json.loads(first.body)["id"]
    # The same content again, in the other encoding (and with the key order changed): a replay.
    again = target.post(
        multipart(part("external_id", b"conflict-1"), file_part(image), part("text", b"hello")),
        MULTIPART,
    )
    assert again.status == 200 and json.loads(again.body)["id"] == item_id
    for changed in (
        {**body, "text": "hello!"},
        {**body, "image_base64": b64(fresh_image())},
        {**body, "metadata": {"k": 1}},
    ):
        reply = target.refused(json.dumps(changed).encode(), JSON, 409, "external_id_conflict")
        assert item_id in json.loads(reply.body)["error"]["message"]


# -- what waitress answers by itself -----------------------------------------------------------


def test_bad_content_length_is_a_json_400(live_server: LiveServer) -> None:
    raw = b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n"
    reply = exchange(live_server, raw)
    assert (reply.status, reply.error_code()) == (400, "bad_request")


def test_two_megabyte_header_is_a_json_431(live_server: LiveServer) -> None:
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n"
    reply = exchange(live_server, raw)
    assert (reply.status, reply.error_code()) == (431, "headers_too_large")


def test_unsupported_transfer_encoding_is_a_client_error(live_server: LiveServer) -> None:
    """RFC 9112 section 6.1 suggests 501 (SHOULD); our contract is that no input causes a 5xx,
    because platforms alert and retry on 5xx. So it is a 400 with its own stable code."""
    raw = b"POST /v1/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    reply = exchange(live_server, raw)
    assert (reply.status, reply.error_code()) == (400, "unsupported_transfer_encoding")


# -- hostile images through the real server ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(samples.REFUSED))
def test_hostile_image_is_refused_with_its_code(target: Target, name: str) -> None:
    build, status, code = samples.REFUSED[name]
    target.refused(multipart(file_part(build())), MULTIPART, status, code)


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda p: p.name)
def test_fuzz_reproducer_gets_a_clear_answer(target: Target, path: Path) -> None:
    """Every reproducer the fuzz found: accepted, or refused with a 4xx and a stable code."""
    reply = target.post(multipart(file_part(path.read_bytes())), MULTIPART)
    assert reply.status == 202 or (400 <= reply.status < 500 and reply.error_code()), (
        reply.status,
        reply.body[:300],
    )


def _headers_only(length: int) -> bytes:
    return (
        f"POST /v1/items HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_huge_body_is_refused_before_it_is_sent(live_server: LiveServer) -> None:
    """200 MB announced, not one byte sent: only a server that never waits for it can answer."""
    started = time.monotonic()
    reply = exchange(live_server, _headers_only(200_000_000), timeout=10)
    assert (reply.status, reply.error_code()) == (413, "payload_too_large")
    assert time.monotonic() - started < 5


def test_waitress_and_flask_share_one_body_limit(live_server: LiveServer) -> None:
    """One byte over the limit: refused from the headers. At the limit: read and passed on."""
    limit = max_body_bytes(live_server.settings)
    reply = exchange(live_server, _headers_only(limit + 1), timeout=10)
    assert (reply.status, reply.error_code()) == (413, "payload_too_large")
    reply = exchange(live_server, _headers_only(limit) + b" " * limit)
    assert (reply.status, reply.error_code()) == (401, "invalid_api_key")  # Flask answered


@pytest.mark.parametrize("path", ["/v1/items", "/v1/items/abc", "/healthz", "/v1/policies"])
def test_options_answers_like_a_json_api(live_server: LiveServer, path: str) -> None:
    reply = exchange(live_server, f"OPTIONS {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.status == 204 and reply.body == b""
    assert "Content-Type" not in reply.headers
    allowed = {m.strip() for m in reply.headers["Allow"].split(",")}
    assert "OPTIONS" in allowed and "GET" in allowed


def test_options_on_an_unknown_route_is_the_json_404(live_server: LiveServer) -> None:
    reply = exchange(live_server, b"OPTIONS /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (reply.status, reply.error_code()) == (404, "not_found")


# -- the same unstorable strings against PostgreSQL --------------------------------------------


@pytest.mark.e2e
@pytest.mark.postgres
def test_unstorable_input_is_refused_on_postgres(
    production_settings: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    """NUL, lone surrogates and NaN are what PostgreSQL itself rejects: refused before it sees
    them (no 500 from a DataError, no orphan blob), while a clean request is stored."""
    server = start_server(production_settings, tmp_path / "server.log")
    try:
        for target in _target(server):
            for case_id, content_type, make_body, status, code in UNSTORABLE:
                before = target.stored.counts()
                reply = target.post(make_body(), content_type)
                assert (reply.status, reply.error_code()) == (status, code), case_id
                assert target.stored.counts() == before, case_id
            ok = target.post(_json('"text": "fine", "metadata": {"k": [1.5, "v"]}')(), JSON)
            assert ok.status == 202, ok.body
            assert target.stored.counts()[0] == 1
    finally:
        server.stop()
