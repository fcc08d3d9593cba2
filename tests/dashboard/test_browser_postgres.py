"""The claim race and search in Chromium on the production configuration (PostgreSQL + Redis).

The race is where the databases differ: on PostgreSQL the loser's INSERT of the claim waits
on the winner's row and fails inside a savepoint. Needs `.ci/services start` (make test);
skipped without it locally and failing under CI=true, like the other production tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from clipmod.settings import Settings
from tests.dashboard import live
from tests.dashboard.test_browser import NewPage, press, race_for_one_item, sign_in
from tests.e2e.conftest import postgres_url, production_settings

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
__all__ = ["postgres_url", "production_settings"]  # fixtures this module uses


@pytest.fixture
def pg_stack(production_settings: Settings, tmp_path: Path) -> Iterator[live.Live]:
    stack = live.start(production_settings, tmp_path)
    try:
        stack.publish("ops", live.review_policy_text())
        yield stack
    finally:
        stack.stop()


def test_race_and_search_on_postgres(pg_stack: live.Live, new_page: NewPage) -> None:
    race_for_one_item(pg_stack, new_page, "acme")
    samples = live.sample_images(["red-knife.png", "blue-cup.png", "yellow-flower.png"])
    ids = dict(zip(pg_stack.upload("acme", samples), (n for n, _ in samples), strict=True))
    pg_stack.wait_scored("acme", list(ids))
    page = new_page()
    sign_in(page, pg_stack, pg_stack.user("searcher@acme.test", tenants=["acme"]))
    page.goto(f"{pg_stack.url}/dashboard/search?q=a+photo+of+a+knife")
    first = page.locator("#results li.card").first.get_attribute("data-item")
    assert ids.get(first or "") == "red-knife.png"
    page.goto(f"{pg_stack.url}/dashboard/?tenant=acme")
    press(page, "Enter")
    expect(page.locator("#claim-banner")).to_contain_text("You hold this item")
