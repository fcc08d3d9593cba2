"""Failed items in real Chromium, against a running `clipmod serve` and a real worker.

An image host is down, so uploads that name images on it fail (`url_unreachable`). The host
comes back; an admin retries one item from its row by keyboard, then two admins who both have
the page open press "Retry all" one after the other: the items are queued once, the second
admin is told there was nothing left, and the worker scores them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from cli.supervise import free_port
from clipmod.models import AuditEvent
from tests.dashboard import live
from tests.dashboard.test_browser import press, read, sign_in

pytestmark = pytest.mark.e2e

NewPage = Callable[[], Page]


@contextmanager
def image_host(port: int, png: bytes) -> Iterator[None]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_an_admin_retries_what_failed_while_an_image_host_was_down(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    port = free_port()  # nothing listens there yet: the host is down
    key = live_stack.key(tenant)
    ids = []
    for n in range(3):
        resp = live_stack.api(
            "POST",
            "/v1/items",
            key,
            json={"image_url": f"http://127.0.0.1:{port}/photo-{n}.png", "external_id": f"p{n}"},
        )
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    outcomes = live_stack.wait_scored(tenant, ids)
    assert {(o["status"], o["error"]["code"]) for o in outcomes} == {("failed", "url_unreachable")}

    with image_host(port, live.solid_png("red")):  # the host is back
        first = live_stack.user(f"ops1@{tenant}.test", role="admin")
        second = live_stack.user(f"ops2@{tenant}.test", role="admin")
        page, other = new_page(), new_page()
        sign_in(page, live_stack, first)
        sign_in(other, live_stack, second)
        failed_url = f"{live_stack.url}/dashboard/failed?tenant={tenant}"
        page.goto(failed_url)
        expect(page.locator("#failed-total")).to_have_text("3")
        expect(page.locator("#failed-table tbody tr")).to_have_count(3)
        expect(page.locator("#codes")).to_contain_text("url_unreachable")

        # One item from its row, by keyboard: it goes back to the queue and gets scored.
        page.get_by_role("button", name=f"Retry item {ids[0][:8]}").focus()
        press(page, "Enter")
        expect(page.locator(".flash.ok")).to_have_text("Queued 1 failed item again.")
        expect(page.locator("#failed-table tbody tr")).to_have_count(2)
        assert live_stack.wait_scored(tenant, ids[:1])[0]["status"] == "scored"

        # Two admins with the page open press "Retry all": each item is queued once.
        page.goto(failed_url)
        other.goto(failed_url)
        for p in (page, other):
            expect(p.locator("#retry-all button")).to_have_text("Retry all 2 transient failures")
        with page.expect_navigation():
            page.locator("#retry-all button").click()
        with other.expect_navigation():
            other.locator("#retry-all button").click()
        expect(page.locator(".flash.ok")).to_have_text("Queued 2 failed items again.")
        expect(other.locator(".flash.ok")).to_have_text("Nothing to retry.")
        done = live_stack.wait_scored(tenant, ids)
        assert [o["status"] for o in done] == ["scored"] * 3
        assert all(o.get("error") is None and o["verdict"] for o in done)
        page.goto(failed_url)
        expect(page.locator("#failed-total")).to_have_text("0")

    events = read(live_stack, select(AuditEvent).where(AuditEvent.action == "retry"))
    mine = [e for e in events if e.detail.get("tenant") == tenant]
    assert sorted(e.detail["count"] for e in mine) == [0, 1, 2]
