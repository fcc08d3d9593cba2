"""The SSRF suite: every private/loopback/metadata/redirect case is refused, with a stable
code, against real servers on loopback; an allowlisted loopback server is fetched."""

from __future__ import annotations

import ipaddress
import time

import pytest

from clipmod import netguard
from clipmod.fetch import FetchRules, fetch_image
from clipmod.images import ImageLimits
from clipmod.netguard import AddressPolicy, Timeouts, UrlError
from tests.platform.servers import ImageHost

TIMEOUTS = Timeouts(connect_s=1, read_s=1, total_s=2)
MAX_BYTES = 1024 * 1024


def rules(allow: str = "") -> FetchRules:
    limits = ImageLimits(max_pixels=40_000_000, max_side=12_000, max_aspect=20.0)
    return FetchRules(AddressPolicy.parse(allow), TIMEOUTS, MAX_BYTES, limits)


def refused(url: str, allow: str = "", **kwargs) -> UrlError:  # type: ignore[no-untyped-def]
    with pytest.raises(UrlError) as caught:
        fetch_image(url, rules(allow), **kwargs)
    return caught.value


# -- the address rule (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.5.6.7",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # AWS/GCP/Azure metadata
        "100.100.100.200",  # Alibaba metadata (shared address space)
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",  # AWS IPv6 metadata
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo wrapping 127.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert netguard.forbidden_reason(ip) is not None
    with pytest.raises(UrlError) as caught:
        AddressPolicy().check(ip)
    assert caught.value.code == "url_forbidden"


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert netguard.forbidden_reason(ipaddress.ip_address(address)) is None


def test_the_allowlist_opens_exactly_its_networks() -> None:
    policy = AddressPolicy.parse("127.0.0.1/32, 10.0.0.0/8")
    policy.check(ipaddress.ip_address("127.0.0.1"))
    policy.check(ipaddress.ip_address("10.9.9.9"))
    with pytest.raises(UrlError):
        policy.check(ipaddress.ip_address("127.0.0.2"))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/x.png", "url_forbidden"),
        ("file:///etc/passwd", "url_forbidden"),
        ("gopher://127.0.0.1:6379/_INFO", "url_forbidden"),
        ("http://user:pw@example.com/x.png", "url_forbidden"),
        ("http:///x.png", "invalid_url"),
        ("http://example.com:99999/", "invalid_url"),
        ("http://example.com/" + "a" * 3000, "invalid_url"),
    ],
)
def test_urls_refused_before_any_network(url: str, code: str) -> None:
    with pytest.raises(UrlError) as caught:
        netguard.parse_url(url)
    assert caught.value.code == code


# -- real names, real servers -----------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0"],
)
def test_loopback_in_every_spelling_is_refused(image_host: ImageHost, host: str) -> None:
    error = refused(f"http://{host}:{image_host.port}/image")
    assert error.code == "url_forbidden", error.message
    assert image_host.hits == []  # refused before connecting


def test_metadata_and_private_literals_are_refused_without_a_connection() -> None:
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[fd00::1]/",
    ):
        started = time.monotonic()
        assert refused(url).code == "url_forbidden"
        assert time.monotonic() - started < 0.5  # no connect attempt to wait on


def test_an_allowlisted_loopback_server_is_fetched(image_host: ImageHost, png: bytes) -> None:
    fetched = fetch_image(f"{image_host.url}/image", rules("127.0.0.1/32"))
    assert fetched.data == png
    assert (fetched.info.format, fetched.info.width) == ("png", 64)


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/image", "http://169.254.169.254/"])
def test_a_redirect_inside_is_refused(png: bytes, target: str) -> None:
    """The first hop (127.0.0.2, allowlisted) is fine; where it redirects is checked anew."""
    outer = ImageHost(png, host="127.0.0.2")
    inner = ImageHost(png)
    try:
        location = target.format(port=inner.port)
        error = refused(f"{outer.url}/redirect?to={location}", allow="127.0.0.2/32")
        assert error.code == "url_forbidden", error.message
        assert outer.hits and inner.hits == []
    finally:
        outer.stop()
        inner.stop()


def test_at_most_three_redirects(image_host: ImageHost, png: bytes) -> None:
    assert fetch_image(f"{image_host.url}/chain?n=3", rules("127.0.0.1/32")).data == png
    error = refused(f"{image_host.url}/chain?n=4", allow="127.0.0.1/32")
    assert error.code == "url_too_many_redirects"


def test_dns_is_resolved_once_and_the_checked_address_is_used(image_host: ImageHost) -> None:
    """A rebinding resolver answers an allowed address, then loopback: only the first answer
    is ever asked for, and the connection goes to it."""
    answers = [["127.0.0.1"], ["169.254.169.254"]]
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked) - 1, 1)]

    fetched = fetch_image(
        f"http://images.test:{image_host.port}/image", rules("127.0.0.1/32"), resolver=rebinding
    )
    assert fetched.data and asked == ["images.test"]
    assert image_host.hits == ["/image"]


def test_a_name_with_any_internal_address_is_refused(image_host: ImageHost) -> None:
    error = refused(
        f"http://mixed.test:{image_host.port}/image",
        allow="127.0.0.1/32",
        resolver=lambda host, port: ["127.0.0.1", "10.0.0.7"],
    )
    assert error.code == "url_forbidden"


def test_a_2gb_file_is_refused_from_its_header(image_host: ImageHost) -> None:
    started = time.monotonic()
    assert refused(f"{image_host.url}/huge", allow="127.0.0.1/32").code == "url_too_large"
    assert time.monotonic() - started < 1


def test_a_body_without_length_is_cut_while_streaming(image_host: ImageHost) -> None:
    assert refused(f"{image_host.url}/endless", allow="127.0.0.1/32").code == "url_too_large"


def test_a_slow_loris_hits_the_total_deadline(image_host: ImageHost) -> None:
    started = time.monotonic()
    assert refused(f"{image_host.url}/slowloris", allow="127.0.0.1/32").code == "url_timeout"
    assert 1.5 < time.monotonic() - started < 4  # the 2 s deadline, not a per-read timeout


def test_a_silent_server_hits_the_read_timeout(image_host: ImageHost) -> None:
    started = time.monotonic()
    assert refused(f"{image_host.url}/hang", allow="127.0.0.1/32").code == "url_timeout"
    assert time.monotonic() - started < 3


def test_not_an_image_and_http_errors(image_host: ImageHost) -> None:
    assert refused(f"{image_host.url}/html", allow="127.0.0.1/32").code == "url_not_image"
    assert refused(f"{image_host.url}/missing", allow="127.0.0.1/32").code == "url_http_error"


def test_nothing_listening_is_unreachable() -> None:
    from cli.supervise import free_port

    error = refused(f"http://127.0.0.1:{free_port()}/image", allow="127.0.0.1/32")
    assert error.code == "url_unreachable"


def test_non_ascii_in_the_path_and_query_is_percent_encoded(image_host: ImageHost) -> None:
    fetched = fetch_image(f"{image_host.url}/image?name=café%20ok", rules("127.0.0.1/32"))
    assert fetched.data and image_host.hits == ["/image?name=caf%C3%A9%20ok"]
    assert refused(f"{image_host.url}/imagé", allow="127.0.0.1/32").code == "url_http_error"
