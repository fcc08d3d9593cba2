"""`make screenshots`: the README's dashboard pictures, from the running app.

Starts the real service (worker + `clipmod serve`) on a fresh embedded database, seeds it the
way a team would (keys, people, the review-heavy demo policy, sample uploads, a moderator's
decisions in the browser, image URLs that fail), then photographs the queue, an item page and
the Failed page at 1280x800, and the policy editor (`editor_screens`).

    python -m tests.dashboard.screenshots docs/
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from cli.supervise import free_port
from clipmod import migrate
from tests.conftest import make_settings
from tests.dashboard import editor_screens, live

VIEWPORT = {"width": 1280, "height": 800}
TEXTS = [
    "Selling my old hunting knife, barely used. DM for price.",
    "Anyone know where to get more of the blue pills from last week?",
    "Lovely day at the park with the kids!",
]


def sign_in(page: Page, url: str, email: str) -> None:
    page.goto(f"{url}/dashboard/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", live.PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/dashboard/")


def press(page: Page, key: str) -> None:
    """A key that submits or navigates: wait until the next page has loaded."""
    with page.expect_navigation():
        page.keyboard.press(key)


def settle(page: Page) -> None:
    """Every image decoded (thumbnails load lazily) and the reveal transition done."""
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.wait_for_timeout(300)


def seed(stack: live.Live) -> None:
    stack.user("admin@example.com", "admin")
    stack.user("mia@example.com", "moderator", ["acme"])
    stack.key("globex")
    stack.publish("acme", live.review_policy_text())
    bank = {"name": "known-scams", "kind": "block", "description": "removed by moderators"}
    assert stack.api("POST", "/v1/banks", stack.key("acme", admin=True), json=bank).ok
    uploads = live.sample_images() + live.world_images(range(8, 30))
    ids = stack.upload("acme", uploads[: len(uploads) // 2 + 4])
    ids += stack.upload("globex", uploads[len(uploads) // 2 + 4 :])
    for n, text in enumerate(TEXTS):
        resp = stack.api(
            "POST", "/v1/items", stack.key("acme"), json={"text": text, "external_id": f"post-{n}"}
        )
        ids.append(resp.json()["id"])
    stack.wait_scored("acme", ids[: len(ids) // 2])
    # Failures for the Failed page: an image host that is down, and a URL that is no image.
    down = free_port()
    failing = [(f"http://127.0.0.1:{down}/listing-{n}.jpg", f"listing-{n}") for n in range(3)]
    failing.append((f"{stack.url}/healthz", "avatar-7"))
    failed = []
    for url, external_id in failing:
        body = {"image_url": url, "external_id": external_id}
        failed.append(stack.api("POST", "/v1/items", stack.key("globex"), json=body).json()["id"])
    stack.wait_scored("globex", failed)


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"dashboard-{name}.png" for name in ("queue", "item", "failed")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), fetch_allow="127.0.0.1/32")
        migrate.upgrade(settings)
        stack = live.start(settings, Path(tmp))
        try:
            seed(stack)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=live.CHROMIUM)
                page = browser.new_page(viewport=VIEWPORT)
                sign_in(page, stack.url, "mia@example.com")
                press(page, "Enter")  # the oldest waiting item
                page.fill("textarea[name=reason]", "Looks like a toy gun? Second opinion please.")
                page.evaluate("document.activeElement.blur()")
                press(page, "e")  # escalated: the admin's item page shows the history
                escalated = stack.url + "/dashboard/?queue=escalated"
                press(page, "a")
                page.goto(stack.url + "/dashboard/")
                settle(page)
                page.screenshot(path=str(out / "dashboard-queue.png"))
                page.context.close()
                page = browser.new_page(viewport=VIEWPORT)
                sign_in(page, stack.url, "admin@example.com")
                page.goto(escalated)
                press(page, "Enter")
                page.keyboard.press(" ")
                settle(page)
                page.screenshot(path=str(out / "dashboard-item.png"), full_page=True)
                page.goto(stack.url + "/dashboard/failed")
                page.screenshot(path=str(out / "dashboard-failed.png"))
                written += editor_screens.shoot(browser, stack.url, "admin@example.com", out)
                browser.close()
        finally:
            stack.stop()
    print(json.dumps({"written": [str(p) for p in written]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs"))
