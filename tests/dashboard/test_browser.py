"""The dashboard in real Chromium against a running `clipmod serve` and a real worker.

Uploads go through `/v1/items` and are scored by the worker, people are made with
`clipmod users create`, and everything else happens by clicking and typing in the browser. The
database is only read, to check what the screens claim.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from clipmod.db import make_engine, make_sessionmaker
from clipmod.models import AuditEvent, Decision
from tests.dashboard import live

pytestmark = pytest.mark.e2e

NewPage = Callable[[], Page]


def sign_in(page: Page, stack: live.Live, email: str, password: str = live.PASSWORD) -> None:
    page.goto(f"{stack.url}/dashboard/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def press(page: Page, key: str) -> None:
    """A key that submits or navigates: returns once the next page has loaded."""
    with page.expect_navigation():
        page.keyboard.press(key)


def read(stack: live.Live, stmt):  # type: ignore[no-untyped-def]
    engine = make_engine(stack.settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(stmt))
    finally:
        engine.dispose()


def test_sign_in_failed_sign_in_and_sign_out(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    email = live_stack.user(f"mod@{tenant}.test", tenants=[tenant])
    page = new_page()
    page.goto(f"{live_stack.url}/dashboard/")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    sign_in(page, live_stack, email, "not my password")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    sign_in(page, live_stack, email)
    expect(page.locator("header .who")).to_contain_text(email)
    expect(page.locator("#empty-queue")).to_contain_text("The queue is clear")
    with page.expect_navigation():
        page.click("text=Sign out")
    expect(page.locator(".flash.info")).to_have_text("You are signed out.")
    page.goto(f"{live_stack.url}/dashboard/")
    expect(page).to_have_url(re.compile(r"/dashboard/login"))


def test_two_moderators_race_for_one_item(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    race_for_one_item(live_stack, new_page, tenant)


def race_for_one_item(live_stack: live.Live, new_page: NewPage, tenant: str) -> None:
    """Two people open the same item at once: one holds it, the other is told who does."""
    (item,) = live_stack.upload(tenant, live.world_images([8]))
    live_stack.wait_scored(tenant, [item])
    people = [live_stack.user(f"{n}@{tenant}.test", tenants=[tenant]) for n in ("ann", "ben")]
    pages = [new_page(), new_page()]
    for page, email in zip(pages, people, strict=True):
        sign_in(page, live_stack, email)
    url = f"{live_stack.url}/dashboard/items/{item}"
    # Both open the item at the same moment; the server decides who gets it.
    for page in pages:
        page.evaluate("url => { window.location.href = url; }", url)
    for page in pages:
        page.wait_for_url(url)
        page.wait_for_load_state()
    banners = [p.locator("#claim-banner").inner_text() for p in pages]
    winners = [i for i, text in enumerate(banners) if text.startswith("You hold this item")]
    assert len(winners) == 1, banners
    win, lose = winners[0], 1 - winners[0]
    assert f"{people[win]} is reviewing this item" in banners[lose]
    # The loser tries anyway: told who holds it, and nothing is recorded for them.
    pages[lose].keyboard.press("a")
    expect(pages[lose].locator("#decision-error")).to_contain_text(
        f"{people[win]} is reviewing this item"
    )
    press(pages[win], "r")
    decisions = read(live_stack, select(Decision).where(Decision.item_id == item))
    assert [(d.moderator, d.action.value) for d in decisions] == [(people[win], "remove")]


def test_blurred_image_and_a_logged_reveal(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    cup, knife = live_stack.upload(tenant, live.sample_images(["blue-cup.png", "red-knife.png"]))
    live_stack.wait_scored(tenant, [knife, cup])
    email = live_stack.user(f"mod@{tenant}.test", tenants=[tenant])
    page = new_page()
    sign_in(page, live_stack, email)
    page.goto(f"{live_stack.url}/dashboard/items/{cup}")
    expect(page.locator("#item-media")).not_to_have_class(re.compile("blurred"))
    page.goto(f"{live_stack.url}/dashboard/items/{knife}")
    media = page.locator("#item-media")
    expect(media).to_have_class(re.compile("blurred"))
    img_filter = media.locator("img").evaluate("el => getComputedStyle(el).filter")
    assert "blur" in img_filter
    with page.expect_response(re.compile(r"/reveal$")) as reveal:
        page.keyboard.press(" ")
    assert reveal.value.status == 200
    expect(media).not_to_have_class(re.compile("blurred"))
    assert media.locator("img").evaluate("el => getComputedStyle(el).filter") == "none"
    img = page.request.get(f"{live_stack.url}/dashboard/items/{knife}/image")
    assert img.headers["content-type"] == "image/png"
    assert img.headers["x-content-type-options"] == "nosniff"
    events = read(live_stack, select(AuditEvent).where(AuditEvent.action == "reveal"))
    assert [(e.actor, e.item_id) for e in events if e.item_id == knife] == [(email, knife)]


def test_bulk_decide_with_shift_click_select_all_and_a_confirmation(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    ids = live_stack.upload(tenant, live.world_images(range(40, 54)))
    live_stack.wait_scored(tenant, ids)
    mod, other = (live_stack.user(f"{n}@{tenant}.test", tenants=[tenant]) for n in ("mo", "ed"))
    page = new_page()
    sign_in(page, live_stack, mod)
    waiting = int(page.locator("#waiting-count").inner_text())
    assert waiting >= 13
    boxes = page.locator("#queue-table tbody input[name=item]")
    boxes.nth(0).click()
    boxes.nth(2).click(modifiers=["Shift"])
    expect(page.locator("#selected-count")).to_have_text("3 selected")
    with page.expect_navigation():
        page.click("#bulkbar button[value=remove]")
    expect(page.locator(".flash.ok")).to_have_text("Removed 3 items.")
    # Select everything left on the page; meanwhile another moderator decides one of them.
    page.check("#select-all")
    count = boxes.count()
    expect(page.locator("#selected-count")).to_have_text(f"{count} selected")
    first = page.locator("#queue-table tbody tr").first.get_attribute("data-item")
    assert first is not None
    elsewhere = new_page()
    sign_in(elsewhere, live_stack, other)
    elsewhere.goto(f"{live_stack.url}/dashboard/items/{first}")
    press(elsewhere, "a")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#bulkbar button[value=allow]")
    # Two are skipped: the one decided meanwhile, and the next one, which the other moderator
    # now holds (deciding moved them on to it).
    expect(page.locator(".flash.ok")).to_have_text(f"Allowed {count - 2} items.")
    warnings = page.locator(".flash.warn")
    expect(warnings).to_have_count(2)
    expect(warnings.first).to_contain_text(f"Skipped {first[:8]}: this item changed")
    expect(warnings.nth(1)).to_contain_text(f"{other} is reviewing this item")
    rows = read(live_stack, select(Decision).where(Decision.item_id.in_(ids)))
    assert sorted(d.moderator for d in rows if d.item_id == first) == [other]
    assert len(rows) == 3 + (count - 2) + 1


def test_search_finds_the_knife_samples_first(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    samples = live.sample_images()
    ids = dict(zip(live_stack.upload(tenant, samples), (n for n, _ in samples), strict=True))
    live_stack.wait_scored(tenant, list(ids))
    page = new_page()
    sign_in(page, live_stack, live_stack.user(f"mod@{tenant}.test", tenants=[tenant]))
    page.keyboard.press("/")
    page.keyboard.type("a photo of a knife")
    press(page, "Enter")
    cards = page.locator("#results li.card")
    expect(cards).to_have_count(len(samples))
    first = cards.first.get_attribute("data-item")
    assert ids[first] in ("red-knife.png", "green-knife-and-pink-cup.png"), ids[first]
    page.fill(".searchbar input", "x" * 10_000)
    press(page, "Enter")
    expect(page.locator("#search-error")).to_contain_text("10,000 characters; the limit is 300")


def test_a_moderator_cannot_see_another_tenant(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    other = tenant + "x"
    (theirs,) = live_stack.upload(other, live.world_images([9]))
    (mine,) = live_stack.upload(tenant, live.world_images([10]))
    live_stack.wait_scored(other, [theirs])
    live_stack.wait_scored(tenant, [mine])
    page = new_page()
    sign_in(page, live_stack, live_stack.user(f"mod@{tenant}.test", tenants=[tenant]))
    expect(page.locator("#queue-table tbody tr")).to_have_count(1)
    expect(page.locator(f"tr[data-item='{mine}']")).to_have_count(1)
    resp = page.goto(f"{live_stack.url}/dashboard/items/{theirs}")
    assert resp is not None and resp.status == 404
    expect(page.locator("h1")).to_contain_text("404")
    for path in ("image", "similar"):
        assert page.request.get(f"{live_stack.url}/dashboard/items/{theirs}/{path}").status == 404
    page.goto(f"{live_stack.url}/dashboard/search?q=a+photo")
    expect(page.locator("#results li.card")).to_have_count(1)


def test_the_audit_log_shows_it_all(live_stack: live.Live, new_page: NewPage, tenant: str) -> None:
    ids = live_stack.upload(tenant, live.world_images([11, 12, 13]))
    live_stack.wait_scored(tenant, ids)
    mod = live_stack.user(f"mod@{tenant}.test", tenants=[tenant])
    admin = live_stack.user(f"admin@{tenant}.test", "admin")
    page = new_page()
    sign_in(page, live_stack, mod, "wrong password!")
    sign_in(page, live_stack, mod)
    page.goto(f"{live_stack.url}/dashboard/items/{ids[0]}?tenant={tenant}")  # claim
    page.evaluate("document.querySelector('#item-media').classList.add('blurred')")
    with page.expect_response(re.compile(r"/reveal$")):
        page.keyboard.press(" ")
    press(page, "e")  # escalate → the next item of this tenant
    page.goto(f"{live_stack.url}/dashboard/search?q=a+photo+of+a+cat")
    page.goto(f"{live_stack.url}/dashboard/?tenant={tenant}")
    page.check("#select-all")
    with page.expect_navigation():
        page.click("#bulkbar button[value=allow]")
    with page.expect_navigation():
        page.click("text=Sign out")

    page = new_page()
    sign_in(page, live_stack, admin)
    page.goto(f"{live_stack.url}/dashboard/audit?actor={mod}")
    shown = page.locator("#audit-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.action)"
    )
    for action in (
        "login_failed",
        "login",
        "claim",
        "reveal",
        "decide",
        "search",
        "bulk_decide",
        "logout",
    ):
        assert action in shown, (action, shown)
    with page.expect_download() as download:
        page.click("#export")
    lines = download.value.path().read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,at,actor,action,item_id,tenant,detail" and len(lines) == len(shown) + 1
    decided = [line for line in lines if ",decide," in line]
    assert len(decided) == 3  # the escalation and the two bulk decisions, one row per item


def test_an_admin_adds_a_reviewed_item_to_a_bank_from_its_page(
    live_stack: live.Live, new_page: NewPage, tenant: str
) -> None:
    bank = f"known-{tenant}"
    made = live_stack.api(
        "POST",
        "/v1/banks",
        live_stack.key(tenant, admin=True),
        json={"name": bank, "kind": "block"},
    )
    assert made.status_code == 201, made.text
    (knife,) = live_stack.upload(tenant, live.sample_images(["red-knife.png"]))
    live_stack.wait_scored(tenant, [knife])
    moderator = live_stack.user(f"mod@{tenant}.test", tenants=[tenant])
    admin = live_stack.user(f"admin@{tenant}.test", role="admin")

    page = new_page()
    sign_in(page, live_stack, moderator)
    page.goto(f"{live_stack.url}/dashboard/items/{knife}")
    expect(page.locator("#decide")).to_be_visible()
    expect(page.locator("#add-to-bank")).to_have_count(0)  # banks are an admin's to change

    page = new_page()
    sign_in(page, live_stack, admin)
    page.goto(f"{live_stack.url}/dashboard/items/{knife}")
    page.select_option("#bank-name", bank)
    page.fill("#bank-note", "the knife listing scam")
    press(page, "Enter")  # from the note field: the form's own submit, not a decision key
    expect(page.locator(".flashes .flash.ok")).to_have_text(
        f"Added to block bank {bank} (version 1)."
    )
    page.select_option("#bank-name", bank)
    page.focus("#bank-add")
    press(page, "Enter")  # the button, from the keyboard
    expect(page.locator(".flashes .flash.warn")).to_have_text(
        f"Already in bank {bank}: nothing changed."
    )

    shown = live_stack.api(
        "GET", f"/v1/banks/{bank}?entries=1", live_stack.key(tenant, admin=True)
    ).json()
    assert [(e["item_id"], e["source"]) for e in shown["entry_list"]] == [(knife, "item")]
    assert [v["note"] for v in shown["versions"]] == ["the knife listing scam"]
    events = read(live_stack, select(AuditEvent).where(AuditEvent.action == "bank_add"))
    assert [(e.actor, e.item_id) for e in events if e.item_id == knife] == [(admin, knife)]
    decided = read(live_stack, select(Decision).where(Decision.item_id == knife))
    assert decided == []  # adding to a bank decides nothing
