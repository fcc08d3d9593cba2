"""Real HTTP servers on loopback for the platform tests: a callback receiver and an image host.

Only loopback addresses, every loop bounded in time and bytes, and each server stops itself
with the test (the fixtures call `stop`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from clipmod import signing
from clipmod.errors import ClipmodError

MAX_STREAM_BYTES = 64 * 1024 * 1024  # a "2 GB" body stops here if the client never does
MAX_STALL_S = 30.0  # a hanging handler gives up after this


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int) -> None:
        self.stopping = threading.Event()
        self.httpd = _Server((host, port), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def stall(self) -> None:
        self.owner.stopping.wait(MAX_STALL_S)


# -- the callback receiver --------------------------------------------------------------------


@dataclass
class Received:
    delivery_id: str | None
    body: dict[str, Any]
    verified: bool
    answered: int | str


@dataclass
class ReceiverState:
    secrets: list[str]
    script: list[int | str] = field(default_factory=list)  # per delivery: status or "hang"
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _ReceiverHandler(_Quiet):
    def do_POST(self) -> None:
        state: ReceiverState = self.owner.state
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            signing.verify(
                self.headers.get(signing.SIGNATURE_HEADER), raw, state.secrets, time.time(), 300
            )
            verified = True
        except ClipmodError:
            verified = False
        with state.lock:
            answer = state.script.pop(0) if state.script else 200
            state.received.append(
                Received(
                    self.headers.get(signing.DELIVERY_HEADER), json.loads(raw), verified, answer
                )
            )
        if answer == "hang":
            self.stall()
            return
        status = int(answer) if verified else 401
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class Receiver(LoopbackServer):
    """Verifies each callback's signature with `secrets`, answers from `script` (then 200)."""

    def __init__(
        self, secrets: list[str], script: list[int | str] | None = None, port: int = 0
    ) -> None:
        self.state = ReceiverState(list(secrets), list(script or []))
        super().__init__(_ReceiverHandler, "127.0.0.1", port)

    @property
    def received(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.received) >= count:
                return self.received
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} callbacks in {timeout} s")


# -- the image host ---------------------------------------------------------------------------


class _ImageHandler(_Quiet):
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        owner: ImageHost = self.owner
        owner.hits.append(self.path)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = getattr(self, "route_" + parts.path.strip("/").split("/")[0], None)
        if route is None:
            self._send(404, b"not found", "text/plain")
            return
        route(query)

    def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def route_image(self, _q: dict[str, str]) -> None:
        self._send(200, self.owner.image, "image/png")

    def route_html(self, _q: dict[str, str]) -> None:
        self._send(200, b"<!DOCTYPE html><html><body>hi</body></html>", "text/html")

    def route_redirect(self, q: dict[str, str]) -> None:
        self._send(302, b"", "text/plain", {"Location": q["to"]})

    def route_chain(self, q: dict[str, str]) -> None:
        """`/chain?n=N`: N redirects, then the image."""
        n = int(q["n"])
        if n == 0:
            self.route_image(q)
        else:
            self._send(302, b"", "text/plain", {"Location": f"/chain?n={n - 1}"})

    def _stream(self, declared: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if declared is not None:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        chunk, sent = b"\0" * 65536, 0
        try:
            while sent < MAX_STREAM_BYTES and not self.owner.stopping.is_set():
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client hung up: what a byte cap does

    def route_huge(self, _q: dict[str, str]) -> None:
        """A "2 GB file" that says so."""
        self._stream(2 * 1024**3)

    def route_endless(self, _q: dict[str, str]) -> None:
        """The same without a Content-Length: only a streaming cap stops it."""
        self._stream(None)

    def route_slowloris(self, _q: dict[str, str]) -> None:
        """Headers, then one byte every 0.2 s: no single read ever times out."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        deadline = time.monotonic() + MAX_STALL_S
        try:
            while time.monotonic() < deadline and not self.owner.stopping.wait(0.2):
                self.wfile.write(b"\0")
                self.wfile.flush()
        except OSError:
            pass

    def route_hang(self, _q: dict[str, str]) -> None:
        self.stall()


class ImageHost(LoopbackServer):
    def __init__(self, image: bytes, host: str = "127.0.0.1") -> None:
        self.image = image
        self.hits: list[str] = []
        super().__init__(_ImageHandler, host, 0)
