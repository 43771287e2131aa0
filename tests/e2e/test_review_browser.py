"""The /review page in headless Chromium (Debian's, driven by Playwright): list, approve, modify,
reject, batch approve, keyboard, and a screenshot that must show something."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from app.web.users import add_user
from tests.e2e.review_support import review_server

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG (enough to tell blank from drawn)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture
async def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def test_review_page_list_approve_modify_reject_batch(browser, kafka_bootstrap: str, unique: str,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    async with review_server(kafka_bootstrap, unique) as (service, client):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(str(client.make_url("/review")))
        items = page.locator("article.item")
        await items.first.wait_for()
        assert await items.count() == 6
        assert await page.locator("#pending-count").inner_text() == "6"
        headings = [" ".join(h.split()) for h in await page.locator("section.group h2").all_inner_texts()]
        assert headings == ["enricher · contact.city+phone (1)", "enricher · contact.jobtitle (3)",
                            "enricher · contact.lifecyclestage (1)", "scorer · contact.lifecyclestage (1)"]

        first = page.locator('article[data-id="p-101"]')
        assert await first.locator("td.current").inner_text() == "Engineer"
        assert await first.locator("input.value").input_value() == "CTO"
        assert "title on the company site" in await first.locator(".agent-reason").inner_text()
        assert "email-31" in await first.locator(".evidence").inner_text()
        assert await page.locator('article[data-id="p-104"] td.current').inner_text() == "unknown"

        shot = await page.screenshot(full_page=True, path=str(tmp_path / "review.png"))
        width, height, pixels = png_pixels(shot)
        assert width >= 1280 and height >= 600
        assert len(set(pixels)) > 50, "the screenshot looks blank"

        # No reviewer name yet: the page asks for it instead of sending an anonymous decision.
        await first.locator("button.approve").click()
        assert "reviewer" in (await page.locator("#message").inner_text()).lower()
        assert service.store.get("p-101").pending  # type: ignore[union-attr]
        await page.fill("#reviewer", "ann")

        await first.locator("input.reason").fill("matches LinkedIn")
        await first.locator("button.approve").click()
        await first.locator(".outcome", has_text="approved by ann").wait_for()
        record = service.store.get("p-101")
        assert record is not None and record.status.value == "approved" and record.decided_by == "ann"
        assert record.decision_reason == "matches LinkedIn"

        second = page.locator('article[data-id="p-102"]')
        assert await second.locator("button.modify").is_disabled()
        await second.locator("input.value").fill("Head of Data & AI")
        await second.locator("button.modify").click()
        await second.locator(".outcome", has_text="modified by ann").wait_for()
        assert service.store.get("p-102").applied_change["changes"][0]["new"] == "Head of Data & AI"  # type: ignore[index,union-attr]

        third = page.locator('article[data-id="p-103"]')
        await third.locator("button.reject").click()  # no reason yet: refused on the page
        assert "needs a reason" in await page.locator("#message").inner_text()
        assert service.store.get("p-103").pending  # type: ignore[union-attr]
        await third.locator("input.reason").fill("no signed order form in the CRM")
        await third.locator("select.category").select_option("insufficient_evidence")
        await third.locator("button.reject").click()
        await third.locator(".outcome", has_text="rejected by ann").wait_for()
        rejected = service.store.get("p-103")
        assert rejected is not None and rejected.status.value == "rejected"
        assert rejected.category == "insufficient_evidence"

        await page.locator('article[data-id="p-104"] input.pick').check()
        await page.locator('article[data-id="p-105"] input.pick').check()
        assert await page.locator("#selected-count").inner_text() == "2"
        await page.fill("#batch-reason", "daily batch")
        await page.click("#batch-approve")
        await page.locator('article[data-id="p-105"] .outcome', has_text="approved by ann").wait_for()
        for pid in ("p-104", "p-105"):
            done = service.store.get(pid)
            assert done is not None and done.status.value == "approved" and done.decision_reason == "daily batch"

        # Keyboard: focus the last item and press `a`.
        last = page.locator('article[data-id="p-201"]')
        await last.focus()
        await page.keyboard.press("a")
        await last.locator(".outcome", has_text="approved by ann").wait_for()
        assert service.store.backlog() == {}
        assert await page.locator("#pending-count").inner_text() == "0"

        # A fresh load shows an empty queue.
        await page.reload()
        await page.locator(".empty", has_text="Nothing to review").wait_for()
        assert errors == []


async def test_group_checkbox_and_shift_a_approve_a_group(browser, kafka_bootstrap: str,  # type: ignore[no-untyped-def]
                                                                 unique: str) -> None:
    async with review_server(kafka_bootstrap, unique) as (service, client):
        page = await browser.new_page()
        await page.goto(str(client.make_url("/review")))
        await page.locator("article.item").first.wait_for()
        await page.fill("#reviewer", "bob")
        group = page.locator('section.group[data-kind="contact.jobtitle"]')
        await group.locator("input.group-check").check()
        assert await page.locator("#selected-count").inner_text() == "3"
        await page.keyboard.press("Shift+A")  # focus is on the group checkbox: the shortcut applies
        await group.locator('article[data-id="p-104"] .outcome', has_text="approved by bob").wait_for()
        assert sorted(service.store.backlog().items()) == [("enricher", 2), ("scorer", 1)]
        assert {r.proposal_id for r in service.store.select() if r.decided_by == "bob"} == {"p-101", "p-102", "p-104"}


async def test_a_decision_asks_for_the_operator_token_when_the_guard_has_one(  # type: ignore[no-untyped-def]
        browser, kafka_bootstrap: str, unique: str) -> None:
    async with review_server(kafka_bootstrap, unique, api_token="op-token-2") as (service, client):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(str(client.make_url("/review")))
        await page.locator("article.item").first.wait_for()
        await page.fill("#reviewer", "ann")
        first = page.locator("article.item").first
        pid = await first.get_attribute("data-id")
        await first.locator("button.approve").click()
        await page.locator("#message.error").wait_for()
        assert "operator token" in await page.locator("#message").inner_text()
        assert service.store.get(pid).status.value == "pending"  # type: ignore[union-attr]
        await page.fill("#token", "op-token-2")
        await first.locator("button.approve").click()
        await page.locator("#message.info").wait_for()
        assert service.store.get(pid).status.value == "approved"  # type: ignore[union-attr]
        assert await page.evaluate("sessionStorage.getItem('crmGuardApiToken')") == "op-token-2"


async def test_a_personal_token_names_the_reviewer_on_the_page_and_on_the_decision(  # type: ignore[no-untyped-def]
        browser, kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    users = tmp_path / "users"
    token = add_user(users, "ann@acme.io", "reviewer")
    async with review_server(kafka_bootstrap, unique, users_file=users) as (service, client):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(str(client.make_url("/review")))
        await page.locator("article.item").first.wait_for()
        await page.fill("#reviewer", "someone else")
        await page.fill("#token", token)
        await page.locator("#token").dispatch_event("change")
        await page.wait_for_function("document.querySelector('#reviewer').readOnly")
        assert await page.input_value("#reviewer") == "ann@acme.io"
        assert "Deciding as ann@acme.io (reviewer)" in await page.locator("#message").inner_text()
        first = page.locator("article.item").first
        pid = await first.get_attribute("data-id")
        await first.locator("button.approve").click()
        await page.locator("#message.info").wait_for()
        assert service.store.get(pid).decided_by == "ann@acme.io"  # type: ignore[union-attr]

        await page.fill("#token", token + "-wrong")
        await page.locator("#token").dispatch_event("change")
        await page.locator("#message.error").wait_for()
        assert "does not know this token" in await page.locator("#message").inner_text()
        assert not await page.evaluate("document.querySelector('#reviewer').readOnly")
