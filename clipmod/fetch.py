"""Fetching an item's `image_url`, in a worker, never in the request.

Everything network-facing is `clipmod.netguard`'s (address checks, pinned connections,
timeouts); this module adds what an image fetch needs on top: at most `MAX_REDIRECTS`
redirects, each re-checked as a new URL; a byte cap enforced while streaming (a declared
`Content-Length` over it is refused before reading); and the bytes must decode as an image we
accept, through the same `clipmod.images` checks as an upload. Every refusal is a `UrlError`
whose code becomes the item's stable failure code.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from urllib.parse import urljoin

from clipmod import images
from clipmod.errors import PayloadTooLarge, UnsupportedMedia
from clipmod.netguard import AddressPolicy, Resolver, Timeouts, UrlError, request, system_resolver
from clipmod.settings import Settings

MAX_REDIRECTS = 3
CHUNK = 64 * 1024
USER_AGENT = "clipmod-fetch/1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchRules:
    policy: AddressPolicy
    timeouts: Timeouts
    max_bytes: int
    limits: images.ImageLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchRules:
        return cls(
            policy=AddressPolicy.parse(settings.fetch_allow),
            timeouts=Timeouts(
                settings.fetch_connect_timeout_s,
                settings.fetch_read_timeout_s,
                settings.fetch_total_timeout_s,
            ),
            max_bytes=settings.max_upload_bytes,
            limits=images.ImageLimits.from_settings(settings),
        )


@dataclass(frozen=True)
class Fetched:
    data: bytes
    url: str  # after redirects
    info: images.ImageInfo


def _read_capped(resp: http.client.HTTPResponse, declared: str | None, max_bytes: int) -> bytes:
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise UrlError(
            f"the server announces {int(declared)} bytes; the limit is {max_bytes}",
            code="url_too_large",
        )
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = resp.read1(CHUNK)
        if not chunk:
            if resp.length:  # fewer bytes than announced
                raise UrlError("the server closed the connection early", code="url_unreachable")
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise UrlError(f"the body passed the {max_bytes}-byte limit", code="url_too_large")
        chunks.append(chunk)


def fetch_bytes(
    url: str, rules: FetchRules, resolver: Resolver = system_resolver
) -> tuple[bytes, str]:
    """The body of `url` after at most `MAX_REDIRECTS` checked redirects, and the final URL."""
    deadline = time.monotonic() + rules.timeouts.total_s
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        with request(
            current,
            policy=rules.policy,
            timeouts=rules.timeouts,
            headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
            resolver=resolver,
            deadline=deadline,
        ) as resp:
            if resp.status in _REDIRECTS:
                location = resp.getheader("Location")
                if not location:
                    raise UrlError(f"HTTP {resp.status} without a Location", code="url_http_error")
                current = urljoin(current, location.strip())
                continue
            if resp.status != 200:
                raise UrlError(f"the server answered HTTP {resp.status}", code="url_http_error")
            return _read_capped(resp, resp.getheader("Content-Length"), rules.max_bytes), current
    raise UrlError(f"more than {MAX_REDIRECTS} redirects", code="url_too_many_redirects")


def fetch_image(url: str, rules: FetchRules, resolver: Resolver = system_resolver) -> Fetched:
    data, final = fetch_bytes(url, rules, resolver)
    try:
        info = images.inspect(data, rules.limits)
    except UnsupportedMedia as exc:
        raise UrlError(f"not an accepted image: {exc.message}", code="url_not_image") from None
    except PayloadTooLarge as exc:
        raise UrlError(exc.message, code=exc.code) from None
    return Fetched(data, final, info)
