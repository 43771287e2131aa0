"""The timeline HTTP API and pages over a real aiohttp server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.web.keys import REVIEW, TIMELINE, TRUST
from tests.e2e.timeline_data import EMAIL, PHONE, T0, H, timeline_app

pytestmark = pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(timeline_app())) as c:
        yield c


async def test_record_timeline_in_order_with_attachments_and_masking(client: TestClient) -> None:
    r = await client.get("/api/records/hubspot/contact/101/timeline")
    assert r.status == 200
    body = await r.json()
    assert body["masked"] is True and body["total"] == 6
    items = body["items"]
    assert [(i["actor_kind"], i["field"]) for i in items] == [
        ("human", "email"), ("human", "utm_source"), ("agent", "mobilephone"), ("agent", "utm_source"),
        ("human", "utm_source"), ("automation", "lifecyclestage")]
    assert items[0]["new"] == "a***@e***.com"
    assert items[2]["new"] == "+1******4567"
    assert EMAIL not in await r.text() and PHONE not in await r.text()
    agent_change = items[3]
    assert [f["detector"] for f in agent_change["findings"]] == ["mass_overwrite"]
    assert [o["event_id"] for o in agent_change["overridden_by"]] == ["ev-h2"]
    assert [o["detector"] for o in items[4]["overrides"]] == ["override"]


async def test_record_key_may_be_url_encoded_and_unknown_is_404(client: TestClient) -> None:
    r = await client.get("/api/records/hubspot%2Fcontact%2F102/timeline")
    assert r.status == 200 and (await r.json())["total"] == 2
    r = await client.get("/api/records/hubspot/contact/999/timeline")
    assert r.status == 404 and "no timeline" in (await r.json())["error"]


async def test_filters_paging_and_bad_parameters(client: TestClient) -> None:
    base = "/api/records/hubspot/contact/101/timeline"
    body = await (await client.get(base, params=[("kind", "human,automation"), ("field", "utm_source")])).json()
    assert [(i["actor_kind"], i["field"]) for i in body["items"]] == [("human", "utm_source"), ("human", "utm_source")]
    since = await (await client.get(base, params={"since": str(T0 + 2 * H)})).json()
    assert [i["event_id"] for i in since["items"]] == ["ev-h2", "ev-w1"]
    until = await (await client.get(base, params={"until": "2026-01-01T01:00:00Z"})).json()
    assert {i["event_id"] for i in until["items"]} == {"ev-h1"}
    seen, cursor = [], None
    while True:
        params = {"limit": "4", "order": "desc", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get(base, params=params)).json()
        seen += [(i["event_id"], i["field"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 6 and seen[0] == ("ev-w1", "lifecyclestage") and seen[-1] == ("ev-h1", "email")
    for params, word in [({"kind": "robot"}, "kind"), ({"limit": "0"}, "limit"), ({"cursor": "%%%"}, "cursor"),
                         ({"since": "yesterday-ish"}, "since"), ({"order": "up"}, "order")]:
        r = await client.get(base, params=params)
        assert r.status == 400, params
        assert (await r.json())["error"].startswith(word)


async def test_agent_timeline_across_records(client: TestClient) -> None:
    body = await (await client.get("/api/agents/enricher/timeline")).json()
    assert body["records"] == 3
    assert {i["record_key"] for i in body["items"]} == {"hubspot/contact/101", "hubspot/contact/102", "hubspot/deal/9"}
    assert body["items"][0]["event_id"] == "ev-w1"  # newest first, other actors on its records included
    own = await (await client.get("/api/agents/enricher/timeline", params={"only_agent": "1"})).json()
    assert {i["actor_id"] for i in own["items"]} == {"enricher"} and own["total"] == 4
    field = await (await client.get("/api/agents/enricher/timeline", params={"field": "utm_source",
                                                                              "kind": "human"})).json()
    assert [i["event_id"] for i in field["items"]] == ["ev-h2", "ev-h3", "ev-h1"]
    none = await (await client.get("/api/agents/nobody/timeline")).json()
    assert none["items"] == [] and none["total"] == 0


async def test_revert_plan_api_skips_human_fixed_fields_and_masks(client: TestClient) -> None:
    r = await client.get("/api/agents/enricher/revert-plan")
    assert r.status == 400 and "since" in (await r.json())["error"]
    plan = await (await client.get("/api/agents/enricher/revert-plan", params={"since": str(T0)})).json()
    restored = {(i["record_key"], i["field"]): i["restore_value"] for i in plan["items"]}
    assert restored == {("hubspot/contact/102", "utm_source"): "newsletter",
                        ("hubspot/deal/9", "dealstage"): "qualifiedtobuy"}
    assert [(s["record_key"], s["field"]) for s in plan["skipped_human_changed"]] == [
        ("hubspot/contact/101", "utm_source")]
    assert [(s["field"], s["reason"]) for s in plan["skipped"]] == [("mobilephone", "unknown_prior")]
    assert plan["skipped"][0]["agent_value"] == "+1******4567" and plan["masked"] is True
    only = await (await client.get("/api/agents/enricher/revert-plan",
                                   params=[("since", "2026-01-01T00:00:00Z"), ("field", "dealstage")])).json()
    assert [i["field"] for i in only["items"]] == ["dealstage"]


async def test_show_pii_serves_values_in_full() -> None:
    async with TestClient(TestServer(timeline_app(show_pii=True))) as c:
        body = await (await c.get("/api/records/hubspot/contact/101/timeline")).json()
        assert body["masked"] is False and body["items"][0]["new"] == EMAIL
        page = await (await c.get("/records/hubspot/contact/101")).text()
        assert EMAIL in page


async def test_lists_and_pages(client: TestClient) -> None:
    records = (await (await client.get("/api/timeline/records")).json())["records"]
    assert records[0]["record_key"] == "hubspot/contact/101" and records[0]["findings"] == 2
    agents = (await (await client.get("/api/timeline/agents")).json())["agents"]
    assert [(a["agent"], a["records"], a["changes"]) for a in agents] == [("enricher", 3, 4)]
    page = await client.get("/records/hubspot/contact/101")
    text = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    assert 'class="card kind-agent"' in text and 'class="card kind-human"' in text and "mass_overwrite" in text
    assert EMAIL not in text and "a***@e***.com" in text
    assert (await client.get("/records/hubspot/contact/nope")).status == 404
    agent = await (await client.get("/agents/enricher")).text()
    assert "paused" in agent and "0.82" in agent and "enricher overwrote utm_source on 2 records" in agent
    assert 'href="/records/hubspot/contact/102"' in agent
    index = await (await client.get("/")).text()
    assert 'href="/agents/enricher"' in index and 'href="/records/hubspot/deal/9"' in index
    css = await client.get("/timeline-assets/timeline.css")
    assert css.status == 200 and "--agent" in await css.text()
    assert (await client.get("/timeline-assets/../timeline.py")).status == 404


async def test_html_escapes_values() -> None:
    app = timeline_app()
    from app.timeline.store import TimelineEntry

    app[TIMELINE].append(TimelineEntry(
        event_id="ev-x", record_key="hubspot/contact/666", source="hubspot", object_type="contact", record_id="666",
        occurred_at=T0, field="jobtitle", new="<script>alert(1)</script>", actor_id="<b>x</b>", actor_kind="agent"))
    async with TestClient(TestServer(app)) as c:
        text = await (await c.get("/records/hubspot/contact/666")).text()
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text and "<b>x</b>" not in text


async def test_trust_from_the_review_services_snapshot_shape() -> None:
    class Review:
        def trust_snapshot(self, agent: str) -> dict:
            if agent != "enricher":
                raise LookupError(agent)
            return {"agent": agent, "tiers": {"high": {"trust": 0.4567, "counts": {"approved": 3, "overridden": 2},
                                                       "level": "propose"}}, "history": []}

    app = timeline_app()
    del app[TRUST]
    app[REVIEW] = Review()
    async with TestClient(TestServer(app)) as c:
        text = await (await c.get("/agents/enricher")).text()
        assert "0.46" in text and "approved=3" in text and "level=propose" in text
        other = await c.get("/agents/nobody")
        assert other.status == 200 and 'class="trust"' not in await other.text()


async def test_agent_page_says_why_it_is_paused_after_its_alert_resolved() -> None:
    """The pause outlives its alert: the page still names the detector, the reason and the time,
    and how an operator lets the agent go on."""
    from app.runtime.worker import AlertBoard
    from app.web.keys import ALERTS, BOARD
    from detectors.alerts import PauseDecision

    board = AlertBoard()
    board.paused["enricher"] = PauseDecision(
        agent="enricher", reason="agent enricher overwrote set values of utm_source on 3 records within 1h",
        detector="mass_overwrite", alert_id="a1", dedup_key="mass_overwrite:abc", event_id="e1", occurred_at=T0)
    app = timeline_app()
    del app[ALERTS]
    app[BOARD] = board
    async with TestClient(TestServer(app)) as c:
        text = await (await c.get("/agents/enricher")).text()
        calm = await (await c.get("/agents/nobody")).text()
    assert 'class="badge paused"' in text and '<section class="pause">' in text
    assert "Paused by mass_overwrite since 2026-01-01 00:00:00Z" in text
    assert "utm_source on 3 records within 1h" in text and "no longer open" in text
    assert "crm-guard agents resume enricher" in text and "/api/agents/enricher/resume" in text
    assert '<section class="pause">' not in calm and 'class="badge active"' in calm


async def test_home_page_puts_paused_agents_and_every_open_alert_first_in_view() -> None:
    """What on-call needs on opening the guard: which agents are paused, how many alerts each has,
    and every open alert, also of identities that are not agents (they have no page of their own)."""
    from app.runtime.worker import AlertBoard
    from app.web.keys import ALERTS, BOARD
    from detectors.alerts import Alert, PauseDecision
    from tests.e2e import timeline_data

    board = AlertBoard()
    board.paused["closer"] = PauseDecision(agent="closer", reason="stage moves", detector="stage_anomaly",
                                           alert_id="a9", dedup_key="stage_anomaly:a9", event_id="e9", occurred_at=T0)
    board.add(Alert.model_validate({**timeline_data.ALERTS[0], "action": "none"}))
    board.add(Alert.model_validate({
        "alert_id": "u1", "dedup_key": "unattributed_actor:u1", "kind": "unattributed_actor", "severity": "warning",
        "actor_key": "unknown:salesforce:005XYZ", "actor_kind": "unknown", "first_event_at": T0,
        "last_event_at": T0 + 2 * H, "detected_at": T0, "summary": "changes from an unattributed identity"}))
    app = timeline_app()
    del app[ALERTS]
    app[BOARD] = board
    async with TestClient(TestServer(app)) as c:
        text = await (await c.get("/")).text()
    agents = text[text.index('<section class="agents">'):text.index("</section>", text.index('<section class="agents">'))]
    rows = agents.split("<tr>")[2:]
    assert 'href="/agents/closer"' in rows[0] and 'class="badge paused"' in rows[0]  # paused, no changes yet: first
    assert 'href="/agents/enricher"' in rows[1] and 'class="badge active"' in rows[1]
    assert '<td class="num">1</td>' in rows[1]  # enricher's one open alert
    alerts = text[text.index('<section class="alerts">'):]
    assert alerts.index("unknown:salesforce:005XYZ") < alerts.index('href="/agents/enricher"')  # newest first
    assert "changes from an unattributed identity" in alerts and "enricher overwrote utm_source" in alerts
    assert 'href="/review"' in text  # the nav leads to the review queue
