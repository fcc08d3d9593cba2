"""The README's two policy-editor pictures (`make screenshots` takes them after the others).

On the screenshot world (`tests.dashboard.screenshots`: the review-heavy demo policy active,
sample uploads, a moderator's decisions), an admin opens the active policy in the editor:

- `editor-error.png`: a typo (`block_att`) marked at its line and column, listed beside;
- `editor-backtest.png`: weapons blocking again at 0.76, backtested on the stored traffic.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.dashboard import live

VIEWPORT = {"width": 1280, "height": 800}
BLOCK_LINE = 126  # the weapons category's `block_at` in policies/demo.yaml


def _checked(page: Page) -> None:
    expect(page.locator("#status")).to_contain_text("checked in", timeout=30_000)


def shoot(browser: Browser, url: str, email: str, out: Path) -> list[Path]:
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{url}/dashboard/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", live.PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    page.goto(f"{url}/dashboard/policies")
    with page.expect_navigation():
        page.locator("#versions-table tbody tr").first.locator("button.edit").click()
    _checked(page)
    page.evaluate(f"window.clipmodEditor.goto({BLOCK_LINE}, 11)")
    page.keyboard.type("t")
    typo = page.locator(f"#problems li.error[data-line='{BLOCK_LINE}']")
    expect(typo).to_be_visible(timeout=30_000)
    typo.locator("button").click()
    page.locator(".cm-lintRange-error", has_text="block_att").hover()  # its tooltip
    expect(page.locator(".cm-tooltip-lint")).to_be_visible()
    error_png = out / "editor-error.png"
    page.wait_for_timeout(300)
    page.screenshot(path=str(error_png))

    page.evaluate(f"window.clipmodEditor.goto({BLOCK_LINE}, 12)")
    page.keyboard.press("Backspace")
    page.evaluate(f"window.clipmodEditor.goto({BLOCK_LINE}, 13)")
    page.keyboard.press("Shift+End")
    page.keyboard.type("0.76")
    expect(page.locator("#error-count")).to_have_text("0 errors", timeout=30_000)
    page.click("#run-backtest")
    expect(page.locator("#bt-summary")).to_be_visible(timeout=30_000)
    page.wait_for_function("[...document.images].every(i => i.complete)")
    page.evaluate("document.querySelector('#backtest-panel').scrollIntoView({block: 'start'})")
    page.evaluate("window.scrollBy(0, -64)")
    page.wait_for_timeout(300)
    backtest_png = out / "editor-backtest.png"
    page.screenshot(path=str(backtest_png))
    page.close()
    return [error_png, backtest_png]
