"""Outbound HTTP that a tenant's URL cannot turn against our own network (SSRF).

A URL comes from a tenant (an `image_url`, a callback URL), so it may name anything: the cloud
metadata service, a database on the private network, the worker's own loopback. Every request
we make to such a URL goes through here, and here only:

- http and https only; no credentials in the URL;
- the host is resolved ONCE, every address it resolves to is checked, and the connection goes
  to a checked address (the socket is opened on the IP itself; TLS still verifies the name),
  so a DNS answer that changes between check and connect (rebinding) changes nothing;
- refused: loopback, private, link-local (which holds 169.254.169.254, the metadata service),
  shared/CGNAT, multicast, reserved, unspecified, documentation and benchmarking ranges, in
  IPv4 and IPv6, including IPv4 inside IPv6 (mapped `::ffff:a.b.c.d`, NAT64, 6to4, Teredo);
- `CLIPMOD_FETCH_ALLOW` lists networks that are allowed anyway (tests, private deployments);
- a connect timeout, a per-read timeout and a total deadline that a watchdog enforces by
  shutting the socket, so a server dripping one byte a second (slow loris) cannot hold us.

Redirects are the caller's business (`clipmod.fetch` follows at most 3, each re-checked here).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from clipmod.errors import ClipmodError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
MAX_URL_CHARS = 2048
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"

# Ranges `is_global` lets through that can still reach inside: NAT64 prefixes embed an IPv4
# address that a NAT64 gateway will connect to on our behalf.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class UrlError(ClipmodError):
    """A URL we will not or could not fetch; `code` is the item's stable failure code."""

    code, status = "url_forbidden", 422


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Syntax and scheme only (no DNS): what intake can refuse before storing anything."""
    if len(url) > MAX_URL_CHARS:
        raise UrlError(f"URL is longer than {MAX_URL_CHARS} characters", code="invalid_url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlError(f"not a valid URL ({exc})", code="invalid_url") from None
    if parts.scheme not in ("http", "https"):
        raise UrlError(f"only http and https URLs are fetched, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise UrlError("URL has no host", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise UrlError("URLs with credentials are refused")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UrlError("URL contains whitespace or control characters", code="invalid_url")
    # The request line is ASCII: non-ASCII is percent-encoded as a browser would (existing
    # escapes are kept), so `/é.png` is fetched rather than crashing the encoder.
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, path)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address is off limits, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = forbidden_reason(inner)
            return f"embeds {inner}, which {reason}" if reason else None
    checks = (
        (ip.is_loopback, "is loopback"),
        (ip.is_link_local, "is link-local (cloud metadata lives there)"),
        (ip.is_multicast, "is multicast"),
        (ip.is_unspecified, "is unspecified"),
        (ip.is_reserved, "is reserved"),
        (ip.is_private, "is private"),
        (not ip.is_global, "is not globally routable"),
    )
    return next((why for hit, why in checks if hit), None)


@dataclass(frozen=True)
class AddressPolicy:
    allow: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AddressPolicy:
        """`CLIPMOD_FETCH_ALLOW`: comma-separated networks or addresses (`127.0.0.1/32,::1`)."""
        nets = [ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()]
        return cls(tuple(nets))

    def check(self, ip: IPAddress) -> None:
        if any(ip in net for net in self.allow):
            return
        reason = forbidden_reason(ip)
        if reason is not None:
            raise UrlError(f"address {ip} {reason}")


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(target: Target, policy: AddressPolicy, resolver: Resolver) -> list[IPAddress]:
    """Every address the host has, each checked; one forbidden address refuses the host.

    Refusing on any bad answer (rather than picking a good one) keeps the rule simple to state:
    a name that points inside, even partly, is not fetched.
    """
    try:
        raw = resolver(target.host, target.port)
    except (OSError, UnicodeError) as exc:
        raise UrlError(f"cannot resolve {target.host!r} ({exc})", code="url_unreachable") from None
    if not raw:
        raise UrlError(f"{target.host!r} has no address", code="url_unreachable")
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
    for ip in addresses:
        policy.check(ip)
    return addresses


class _Watchdog:
    """Shuts the socket at the deadline: per-read timeouts alone never end a slow drip."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.fired = False
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.fired = True
            raise UrlError("the total time limit passed", code="url_timeout")
        return left

    def arm(self, sock: socket.socket) -> None:
        self.cancel()
        self._timer = threading.Timer(self.remaining(), self._fire, [sock])
        self._timer.daemon = True
        self._timer.start()

    def _fire(self, sock: socket.socket) -> None:
        self.fired = True
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to a checked IP while the Host header keeps the name."""

    def __init__(self, target: Target, ip: IPAddress, connect_s: float, read_s: float):
        super().__init__(target.host, target.port, timeout=read_s)
        self.ip, self.connect_s = ip, connect_s

    def _open(self) -> socket.socket:
        sock = socket.create_connection((str(self.ip), self.port), timeout=self.connect_s)
        sock.settimeout(self.timeout)
        return sock

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, target: Target, ip: IPAddress, connect_s: float, read_s: float):
        super().__init__(target, ip, connect_s, read_s)
        self.context = ssl.create_default_context()

    def connect(self) -> None:
        self.sock = self.context.wrap_socket(self._open(), server_hostname=self.host)


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float
    total_s: float


@contextmanager
def request(
    url: str,
    *,
    policy: AddressPolicy,
    timeouts: Timeouts,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    resolver: Resolver = system_resolver,
    deadline: float | None = None,
) -> Iterator[http.client.HTTPResponse]:
    """One request to a checked address; the response is read inside the `with` block.

    Transport failures become `UrlError` with `url_timeout` or `url_unreachable`.
    """
    target = parse_url(url)
    addresses = resolve(target, policy, resolver)
    watchdog = _Watchdog(deadline or time.monotonic() + timeouts.total_s)
    cls = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    conn: _PinnedHTTP | None = None
    resp: http.client.HTTPResponse | None = None
    try:
        conn = _connect(cls, target, addresses, timeouts, watchdog)
        assert conn.sock is not None
        watchdog.arm(conn.sock)
        conn.request(method, target.path, body=body, headers=headers or {})
        resp = conn.getresponse()
        yield resp
        if watchdog.fired:  # the shut socket read as a clean end of the body
            raise UrlError(f"{target.origin}: the total time limit passed", code="url_timeout")
    except UrlError:
        raise
    except (TimeoutError, http.client.HTTPException, OSError, ValueError) as exc:
        if watchdog.fired or isinstance(exc, TimeoutError):
            raise UrlError(f"{target.origin}: timed out", code="url_timeout") from None
        raise UrlError(
            f"{target.origin}: {type(exc).__name__}: {exc}"[:300], code="url_unreachable"
        ) from None
    finally:
        watchdog.cancel()
        if resp is not None:
            resp.close()  # a `Connection: close` response owns the socket, not `conn`
        if conn is not None:
            conn.close()


def _connect(
    cls: type[_PinnedHTTP],
    target: Target,
    addresses: list[IPAddress],
    timeouts: Timeouts,
    watchdog: _Watchdog,
) -> _PinnedHTTP:
    """Try each checked address in turn (a host may publish an unreachable IPv6 address)."""
    last: OSError | None = None
    for ip in addresses:
        connect_s = min(timeouts.connect_s, watchdog.remaining())
        conn = cls(target, ip, connect_s, timeouts.read_s)
        try:
            conn.connect()
            return conn
        except TimeoutError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            last = exc
    assert last is not None
    raise last
