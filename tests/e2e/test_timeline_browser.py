"""The timeline pages in headless Chromium: lanes, colours, masking, filters, revert preview, screenshots."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.e2e.pngcheck import decode, near
from tests.e2e.timeline_data import EMAIL, PHONE, timeline_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
AGENT_ORANGE = (0xEA, 0x58, 0x0C)
HUMAN_BLUE = (0x25, 0x63, 0xEB)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    server = TestServer(timeline_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def page(base_url: str):  # type: ignore[no-untyped-def]
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            tab = await context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.errors = errors  # type: ignore[attr-defined]
            yield tab
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            await browser.close()


def check_screenshot(png: bytes, path: Path, want: list[tuple[int, int, int]]) -> None:
    """Non-empty rendering: a real PNG, many colours, no colour covering nearly everything, and the
    actor-kind colours of the lanes present."""
    path.write_bytes(png)
    assert len(png) > 10_000, f"{path} is suspiciously small ({len(png)} bytes)"
    image = decode(png)
    assert image.width >= 1000 and image.height >= 600
    counts = image.colours(step=2)
    total = sum(counts.values())
    assert len(counts) > 50, f"{path}: only {len(counts)} colours"
    assert max(counts.values()) / total < 0.97, f"{path}: one colour covers nearly the whole page"
    for colour in want:
        assert any(near(c, colour) for c in counts), f"{path}: no pixels near {colour}"


async def test_record_page_shows_lanes_colours_badges_and_masked_values(page, base_url: str, tmp_path: Path) -> None:
    response = await page.goto(f"{base_url}/records/hubspot/contact/101")
    assert response is not None and response.status == 200
    await page.wait_for_selector(".timeline .card")
    assert await page.locator("h1.record-key").inner_text() == "hubspot/contact/101"
    agent_cards = page.locator(".lane-agent .card")
    human_cards = page.locator(".lane-human .card")
    other_cards = page.locator(".lane-other .card")
    assert await agent_cards.count() == 1 and await human_cards.count() == 2 and await other_cards.count() == 1
    assert "enricher" in await agent_cards.first.inner_text()
    assert "user-7" in await human_cards.first.inner_text()
    assert "workflow-12" in await other_cards.first.inner_text()
    # the agent's card carries its finding and the human's correction
    agent_text = await agent_cards.first.inner_text()
    assert "mass_overwrite" in agent_text and agent_text.count("overridden by a human") == 1
    assert "overrides enricher" in await human_cards.first.inner_text()  # newest first: the revert
    # masking: neither the e-mail nor the phone number reach the browser
    body = await page.content()
    assert EMAIL not in body and PHONE not in body
    text = await page.locator("main").inner_text()
    assert "a***@e***.com" in text and "+1******4567" in text
    # colours: the agent card's border is the agent colour
    border = await agent_cards.first.evaluate("el => getComputedStyle(el).borderLeftColor")
    assert border == "rgb(234, 88, 12)"
    check_screenshot(await page.screenshot(full_page=True), tmp_path / "record.png", [AGENT_ORANGE, HUMAN_BLUE])
    # the legend hides a kind without a reload
    await page.locator('.legend input[data-kind="agent"]').uncheck()
    assert not await page.locator('.timeline .row[data-kind="agent"]').first.is_visible()
    assert await page.locator('.timeline .row[data-kind="human"]').first.is_visible()
    # the server-side filter form
    await page.locator('.filters input[name="kind"][value="human"]').check()
    await page.locator(".filters button[type=submit]").click()
    await page.wait_for_url("**kind=human**")
    assert await page.locator(".timeline .card").count() == 2
    assert await page.locator(".lane-agent .card").count() == 0


async def test_agent_page_shows_alerts_trust_changes_and_previews_a_revert_plan(page, base_url: str,
                                                                                tmp_path: Path) -> None:
    await page.goto(f"{base_url}/agents/enricher")
    heading = await page.locator("h1.agent-name").inner_text()
    assert "enricher" in heading and "paused" in heading
    alerts = await page.locator("section.alerts").inner_text()
    assert "enricher overwrote utm_source on 2 records" in alerts and "critical" in alerts
    assert "0.82" in await page.locator("section.trust").inner_text()
    lanes = page.locator(".timeline")
    assert await lanes.locator(".lane-agent .card").count() == 3
    assert await lanes.locator(".lane-human .card").count() >= 3  # the people on its records
    assert await lanes.locator(".card .rec").first.is_visible()
    check_screenshot(await page.screenshot(full_page=True), tmp_path / "agent.png", [AGENT_ORANGE, HUMAN_BLUE])

    await page.fill("#plan-since", "2026-01-01T00:00:00Z")
    await page.click("#plan-preview")
    table = page.locator("#plan-result table.plan-items")
    await table.wait_for()
    plan_text = await page.locator("#plan-result").inner_text()
    assert "2 fields to restore on 2 records" in plan_text and "1 left alone" in plan_text
    assert "newsletter" in plan_text and "qualifiedtobuy" in plan_text
    assert "skipped: human changed it" in plan_text
    await page.fill("#plan-since", "not a time")
    await page.click("#plan-preview")
    await page.locator("#plan-result .error").wait_for()

    await page.click('.timeline .card a.rec[href="/records/hubspot/contact/102"]')
    await page.wait_for_url("**/records/hubspot/contact/102")
    assert await page.locator(".lane-agent .card").count() == 1


async def test_index_lists_records_and_agents_and_jumps_to_a_record(page, base_url: str, tmp_path: Path) -> None:
    await page.goto(f"{base_url}/")
    agents = await page.locator("section.agents").inner_text()
    assert "enricher" in agents
    records = page.locator("section.records tbody tr")
    assert await records.count() == 3
    assert "hubspot/contact/101" in await records.first.inner_text()
    check_screenshot(await page.screenshot(full_page=True), tmp_path / "index.png", [AGENT_ORANGE])
    await page.fill("#jump-key", "hubspot/deal/9")
    await page.click("#jump button")
    await page.wait_for_url("**/records/hubspot/deal/9")
    # the change that applied proposal p-9 carries its review decisions; the table lists them all
    card = await page.locator(".lane-agent .card").inner_text()
    assert "proposal approved by ann" in card and "proposal review by gate" in card
    assert "customer signed" in await page.locator("section.proposals").inner_text()
