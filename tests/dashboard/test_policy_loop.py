"""review → decide → suggest, on a database that people filled only through the dashboard.

A fresh service; a moderator who never touches the mouse clears a queue of 20 items; then
`clipmod policy suggest` turns those decisions into thresholds. Nothing is inserted directly:
uploads go through `/v1/items`, decisions through Chromium.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from clipmod.demo import world
from clipmod.models import Decision
from tests.dashboard import live
from tests.dashboard.test_browser import press, read

pytestmark = pytest.mark.e2e

QUEUE = 20


def _fill_queue(stack: live.Live, tenant: str) -> dict[str, bool]:
    """Upload held-out world images until exactly QUEUE wait for review; id → is a violation."""
    truth: dict[str, bool] = {}
    seed = 200
    while len(truth) < QUEUE:
        seeds = range(seed, seed + QUEUE - len(truth))
        seed += len(seeds)
        ids = stack.upload(tenant, live.world_images(seeds))
        for item_id, body, s in zip(ids, stack.wait_scored(tenant, ids), seeds, strict=True):
            if body["verdict"]["action"] == "review":
                objects = world.render(s, "heldout").objects
                truth[item_id] = any(o in world.VIOLATION_OBJECTS for o in objects)
    return truth


def test_keyboard_only_queue_then_policy_suggest(
    live_stack: live.Live, new_page: Callable[[], Page], tenant: str
) -> None:
    truth = _fill_queue(live_stack, tenant)
    assert any(truth.values()) and not all(truth.values())
    email = live_stack.user(f"kb@{tenant}.test", tenants=[tenant])
    page = new_page()
    page.goto(f"{live_stack.url}/dashboard/login")
    # The email field takes focus by itself (autofocus); wait for that before typing, or a
    # loaded machine drops the first keystrokes.
    expect(page.locator("input[name=email]")).to_be_focused()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(live.PASSWORD)
    press(page, "Enter")
    expect(page.locator("#waiting-count")).to_have_text(str(QUEUE))
    page.keyboard.press("?")
    expect(page.locator("dialog#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#help")).to_be_hidden()
    press(page, "Enter")  # open the oldest item
    oldest = page.url
    press(page, "j")
    assert page.url != oldest and "/items/" in page.url
    press(page, "k")
    assert page.url == oldest
    started = time.monotonic()
    seen = []
    for _ in range(QUEUE):
        item_id = page.url.split("/items/")[1].split("?")[0]
        seen.append(item_id)
        press(page, "r" if truth[item_id] else "a")
    per_item = (time.monotonic() - started) / QUEUE
    expect(page.locator("#empty-queue")).to_contain_text("The queue is clear")
    expect(page.locator("#waiting-count")).to_have_text("0")
    assert sorted(seen) == sorted(truth)  # each item once, none skipped
    decided = read(live_stack, select(Decision).where(Decision.moderator == email))
    assert {d.item_id: d.action.value for d in decided} == {
        i: "remove" if bad else "allow" for i, bad in truth.items()
    }
    print(f"keyboard review: {per_item * 1000:.0f} ms per item (decide → next item loaded)")

    report = json.loads(live_stack.cli("policy", "suggest", "--json"))
    assert report["labelled_items"] == QUEUE
    suggested = [c for c in report["categories"] if c["review_at"] is not None]
    assert suggested, report["categories"]
    for c in suggested:
        # Removing an audit sample labels only its top category: the others stay unknown.
        assert 0 < c["labelled"] <= QUEUE and c["positives"] >= 1
        assert c["review_at"] <= (c["block_at"] if c["block_at"] is not None else 1.0)
