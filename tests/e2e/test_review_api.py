"""The review HTTP API and the `crm-guard review` CLI against a real server and broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from app import cli
from app.review.service import ReviewService
from app.web.keys import REVIEW
from app.web.review import add_routes, openapi_spec
from app.web.users import add_user
from tests.e2e.review_support import POLICY, make_settings, proposal, review_server

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


async def test_list_is_grouped_by_agent_and_kind_with_current_values(kafka_bootstrap: str, unique: str) -> None:
    async with review_server(kafka_bootstrap, unique) as (_, client):
        resp = await client.get("/api/review/proposals")
        assert resp.status == 200
        data = await resp.json()
        assert data["total"] == 6 and data["backlog"] == {"enricher": 5, "scorer": 1}
        groups = [(g["agent"], g["kind"], g["count"]) for g in data["groups"]]
        assert groups == [("enricher", "contact.city+phone", 1), ("enricher", "contact.jobtitle", 3),
                          ("enricher", "contact.lifecyclestage", 1), ("scorer", "contact.lifecyclestage", 1)]
        titles = data["groups"][1]["items"]
        assert [i["proposal_id"] for i in titles] == ["p-101", "p-102", "p-104"]
        first = titles[0]
        assert first["fields"] == [{"field": "jobtitle", "tier": "low", "proposed": "CTO", "current": "Engineer",
                                    "current_known": True}]
        assert first["reason"] == "title on the company site" and first["evidence"]["activity"] == "email-31"
        assert first["gate"]["action"] == "review" and first["status"] == "pending"
        unknown = titles[2]["fields"][0]
        assert unknown["current_known"] is False and unknown["current"] is None

        filtered = await (await client.get("/api/review/proposals?agent=enricher&field=jobtitle")).json()
        assert filtered["total"] == 3
        assert (await (await client.get("/api/review/proposals?tier=medium")).json())["total"] == 2
        assert (await client.get("/api/review/proposals?tier=extreme")).status == 400
        assert (await client.get("/api/review/proposals?limit=0")).status == 400


async def test_show_approve_modify_reject_and_their_errors(kafka_bootstrap: str, unique: str) -> None:
    async with review_server(kafka_bootstrap, unique) as (service, client):
        resp = await client.get("/api/review/proposals/p-101")
        assert resp.status == 200 and (await resp.json())["record_key"] == "hubspot/contact/101"
        resp = await client.get("/api/review/proposals/nope")
        assert resp.status == 404 and "nope" in (await resp.json())["error"]

        resp = await client.post("/api/review/proposals/p-101/approve", json={"by": "ann", "reason": "checked"})
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "approved" and body["decided_by"] == "ann"
        assert body["decision_reason"] == "checked" and body["via"] == "human"
        again = await client.post("/api/review/proposals/p-101/approve", json={"by": "bob"})
        assert again.status == 409 and "already approved" in (await again.json())["error"]

        resp = await client.post("/api/review/proposals/p-102/modify",
                                 json={"by": "ann", "reason": "typo", "set": {"jobtitle": "Head of Data & AI"}})
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "modified"
        assert body["fields"][0]["applied"] == "Head of Data & AI"

        bad = await client.post("/api/review/proposals/p-104/modify", json={"by": "ann", "set": {"email": "x"}})
        assert bad.status == 400 and "not proposed: email" in (await bad.json())["error"]
        bad = await client.post("/api/review/proposals/p-104/modify", json={"by": "ann", "set": {}})
        assert bad.status == 400
        bad = await client.post("/api/review/proposals/p-104/reject", json={"by": "ann"})
        assert bad.status == 400 and "reason" in (await bad.json())["error"]
        bad = await client.post("/api/review/proposals/p-104/reject", json={"by": "ann", "reason": "x",
                                                                              "category": "whim"})
        assert bad.status == 400
        bad = await client.post("/api/review/proposals/p-104/approve", data=b"{not json",
                                headers={"Content-Type": "application/json"})
        assert bad.status == 400 and "not JSON" in (await bad.json())["error"]
        bad = await client.post("/api/review/proposals/p-104/approve", json={"by": "ann", "extra": 1})
        assert bad.status == 400
        bad = await client.post("/api/review/proposals/p-104/approve", json={"reason": "no name"})
        assert bad.status == 400 and "who decided" in (await bad.json())["error"]
        missing = await client.post("/api/review/proposals/zzz/approve", json={"by": "ann"})
        assert missing.status == 404

        resp = await client.post("/api/review/proposals/p-104/reject", json={"reason": "not a COO",
                                 "category": "wrong_value"}, headers={"X-Forwarded-User": "sso-user"})
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "rejected" and body["decided_by"] == "sso-user"
        assert body["category"] == "wrong_value"
        assert service.store.backlog() == {"enricher": 2, "scorer": 1}


async def test_batch_approve_by_filter_and_by_ids(kafka_bootstrap: str, unique: str) -> None:
    async with review_server(kafka_bootstrap, unique) as (service, client):
        resp = await client.post("/api/review/batch-approve", json={"by": "ann"})
        assert resp.status == 400 and "filter" in (await resp.json())["error"]
        resp = await client.post("/api/review/batch-approve",
                                 json={"by": "ann", "filter": {"agent": "enricher", "field": "jobtitle"}})
        assert resp.status == 200
        assert (await resp.json()) == {"approved": ["p-101", "p-102", "p-104"], "skipped": []}
        resp = await client.post("/api/review/batch-approve",
                                 json={"by": "ann", "ids": ["p-103", "p-101", "ghost", "p-201"],
                                       "filter": {"agent": "enricher"}})
        result = await resp.json()
        assert result["approved"] == ["p-103"]
        assert {s["proposal_id"]: s["reason"] for s in result["skipped"]} == {
            "p-101": "already approved", "ghost": "not found", "p-201": "does not match the filter"}
        assert service.store.backlog() == {"enricher": 1, "scorer": 1}


async def test_trust_and_pin_endpoints(kafka_bootstrap: str, unique: str) -> None:
    async with review_server(kafka_bootstrap, unique) as (service, client):
        await client.post("/api/review/proposals/p-101/approve", json={"by": "ann"})
        trust = await (await client.get("/api/agents/enricher/trust")).json()
        low = trust["tiers"]["low"]
        assert low["counts"]["approved"] == 1 and low["level"] == "propose" and low["level_source"] == "trust"
        assert low["alpha"] == pytest.approx(1.6, abs=0.01) and low["trust"] == pytest.approx(1.6 / 3, abs=0.01)
        assert trust["pending"] == 4
        assert (await client.get("/api/agents/ghost/trust")).status == 404
        resp = await client.post("/api/agents/enricher/pin", json={"tier": "low", "level": "act", "by": "ops",
                                                                   "reason": "trial week"})
        body = await resp.json()
        assert resp.status == 200 and body["event"]["to"] == "act"
        assert body["trust"]["tiers"]["low"]["level_source"] == "pin"
        assert (await client.post("/api/agents/enricher/pin", json={"tier": "low", "level": "god", "by": "x"})).status == 400
        resp = await client.get("/api/agents/enricher/trust")
        assert (await resp.json())["history"][-1]["kind"] == "pin"
        # pinned at act: the next low-tier proposal is applied without review
        record = await service.submit(proposal("p-after-pin", "300", {"jobtitle": "CISO"}))
        assert record.status.value == "approved" and record.via == "gate" and "(pin)" in record.gate["reason"]


async def test_backlog_metric_follows_the_queue(kafka_bootstrap: str, unique: str) -> None:
    registry = CollectorRegistry()
    async with review_server(kafka_bootstrap, unique, registry=registry) as (_, client):
        assert registry.get_sample_value("crm_guard_review_backlog", {"agent": "enricher"}) == 5
        await client.post("/api/review/proposals/p-201/reject", json={"by": "ann", "reason": "no"})
        assert registry.get_sample_value("crm_guard_review_backlog", {"agent": "scorer"}) == 0
        assert registry.get_sample_value("crm_guard_review_decisions_total",
                                         {"agent": "scorer", "outcome": "rejected"}) == 1


async def test_expiry_keeps_pending_by_default_and_expires_when_configured(kafka_bootstrap: str, unique: str) -> None:
    old = [proposal("old-1", "9", {"jobtitle": "CEO"}, age_ms=3 * 86_400_000)]
    async with review_server(kafka_bootstrap, unique, seed=old) as (service, _):
        assert await service.expire_due() == []
        assert service.store.get("old-1").pending  # type: ignore[union-attr]
    async with review_server(kafka_bootstrap, unique + "x", seed=old, expire_after_ms=86_400_000) as (service, _):
        assert await service.expire_due() == ["old-1"]
        assert service.store.get("old-1").status.value == "expired"  # type: ignore[union-attr]
    async with review_server(kafka_bootstrap, unique + "y", seed=old, expire_after_ms=86_400_000,
                             implicit_approval=True) as (service, client):
        await service.expire_due()
        item = await (await client.get("/api/review/proposals/old-1")).json()
        assert item["status"] == "approved" and item["via"] == "expiry" and item["decided_by"] == "implicit-approval"


async def test_not_started_service_answers_503(unique: str) -> None:
    app = web.Application()
    app[REVIEW] = ReviewService(make_settings("127.0.0.1:1", unique), POLICY)
    add_routes(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/review/proposals")
        assert resp.status == 503 and "not running" in (await resp.json())["error"]


async def test_openapi_is_served_valid_and_matches_the_docs_file() -> None:
    app = web.Application()
    add_routes(app)
    async with TestClient(TestServer(app)) as client:
        served = await (await client.get("/api/review/openapi.json")).json()
    assert served == openapi_spec()
    documented = yaml.safe_load((ROOT / "docs" / "openapi-review.yaml").read_text())
    assert documented == served, "regenerate: python -m app.web.review --openapi > docs/openapi-review.yaml"
    routes = {r.resource.canonical for r in app.router.routes() if r.resource.canonical.startswith("/api/")}
    assert routes - {"/api/review/openapi.json"} == set(served["paths"])
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(served)


async def test_page_and_assets_are_served(kafka_bootstrap: str, unique: str) -> None:
    async with review_server(kafka_bootstrap, unique, seed=[]) as (_, client):
        page = await client.get("/review")
        assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        assert "/review/static/review.js" in await page.text()
        assert (await client.get("/review/static/review.js")).status == 200
        assert (await client.get("/review/static/review.css")).status == 200
        assert (await client.get("/review/static/secrets.txt")).status == 404


# ---- the CLI, run as `crm-guard review ...` against the live server --------------------------

async def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "app.cli_review"]
                        if "app.cli_review" not in cli.COMMAND_MODULES else cli.COMMAND_MODULES)
    code = await asyncio.to_thread(cli.main, ["review", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_list_show_approve_modify_reject_and_batch(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with review_server(kafka_bootstrap, unique) as (service, client):
        url = str(client.make_url("")).rstrip("/")
        code, out, _ = await run_cli(["list", "--url", url], monkeypatch, capsys)
        assert code == 0
        assert "enricher · contact.jobtitle (3)" in out and 'jobtitle: "Engineer" -> "CTO"' in out
        assert "6 proposal(s)" in out
        code, out, _ = await run_cli(["show", "p-104", "--url", url], monkeypatch, capsys)
        assert code == 0 and "(unknown) -> \"COO\"" in out and "call on Monday" in out

        code, out, _ = await run_cli(["approve", "p-101", "--url", url, "--by", "ann"], monkeypatch, capsys)
        assert (code, out.strip()) == (0, "p-101: approved")
        code, _, err = await run_cli(["approve", "p-101", "--url", url, "--by", "ann"], monkeypatch, capsys)
        assert code == 2 and "already approved" in err and "Traceback" not in err
        code, out, _ = await run_cli(["modify", "p-105", "--set", "city=Bergen", "--set", "phone=null",
                                      "--reason", "moved", "--url", url, "--by", "ann"], monkeypatch, capsys)
        assert (code, out.strip()) == (0, "p-105: modified")
        assert service.store.get("p-105").applied_change["changes"][0]["new"] is None  # type: ignore[index,union-attr]
        code, out, _ = await run_cli(["reject", "p-103", "--reason", "no order yet", "--category", "wrong_value",
                                      "--url", url, "--by", "bob"], monkeypatch, capsys)
        assert (code, out.strip()) == (0, "p-103: rejected")
        assert service.store.get("p-103").decided_by == "bob"  # type: ignore[union-attr]

        code, out, _ = await run_cli(["approve", "--agent", "enricher", "--field", "jobtitle", "--url", url,
                                      "--by", "ann"], monkeypatch, capsys)
        assert code == 0 and "approved 2 proposal(s)" in out
        code, out, _ = await run_cli(["list", "--url", url, "--json"], monkeypatch, capsys)
        assert code == 0 and '"total": 1' in out


async def test_cli_user_errors_exit_2_and_unreachable_guard_exits_1(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with review_server(kafka_bootstrap, unique, seed=[proposal("q1", "1", {"jobtitle": "x"})]) as (_, client):
        url = str(client.make_url("")).rstrip("/")
        for args, needle in [
            (["show", "missing", "--url", url], "no proposal missing"),
            (["approve", "--url", url, "--by", "a"], "give an ID"),
            (["approve", "q1", "--agent", "enricher", "--url", url, "--by", "a"], "not both"),
            (["modify", "q1", "--set", "novalue", "--url", url, "--by", "a"], "FIELD=VALUE"),
            (["modify", "q1", "--set", "email=x", "--url", url, "--by", "a"], "not proposed"),
            (["reject", "q1", "--reason", " ", "--url", url, "--by", "a"], "must not be empty"),
            (["list", "--url", "ftp://x"], "http://"),
            ([], "choose an action"),
        ]:
            code, _, err = await run_cli(args, monkeypatch, capsys)
            assert code == 2, (args, err)
            assert needle in err and "Traceback" not in err
    from app.broker.embedded import free_port

    code, _, err = await run_cli(["list", "--url", f"http://127.0.0.1:{free_port()}"], monkeypatch, capsys)
    assert code == 1 and "cannot reach the guard" in err


async def test_cli_default_url_comes_from_settings(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from app.broker.embedded import free_port

    port = free_port()
    monkeypatch.setenv("CRM_GUARD_PUBLIC_URL", f"http://127.0.0.1:{port}")
    code, _, err = await run_cli(["list"], monkeypatch, capsys)
    assert code == 1 and f"127.0.0.1:{port}" in err


async def test_a_guard_with_an_operator_token_refuses_decisions_without_it(
    kafka_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Agents reach the API too: with api_token set, approving needs it (HTTP 401 with a reason;
    the CLI exits 2 and says which variable to set), reading does not."""
    async with review_server(kafka_bootstrap, unique, api_token="op-token-1") as (service, client):
        refused = await client.post("/api/review/proposals/p-101/approve", json={"by": "enricher"})
        assert refused.status == 401 and (await refused.json())["error"] == "missing_token"
        assert service.store.get("p-101").status.value == "pending"  # type: ignore[union-attr]
        assert (await client.get("/api/review/proposals")).status == 200
        url = str(client.make_url("")).rstrip("/")
        monkeypatch.delenv("CRM_GUARD_API_TOKEN", raising=False)
        code, _, err = await run_cli(["approve", "p-101", "--url", url, "--by", "ann"], monkeypatch, capsys)
        assert code == 2 and "CRM_GUARD_API_TOKEN" in err
        monkeypatch.setenv("CRM_GUARD_API_TOKEN", "op-token-1")
        code, out, _ = await run_cli(["approve", "p-101", "--url", url, "--by", "ann"], monkeypatch, capsys)
        assert (code, out.strip()) == (0, "p-101: approved")


async def test_named_users_decide_under_their_own_name_within_their_role(
    kafka_bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With api_users_file, the token says who decided (what the body says is not taken), a reviewer
    may decide but not pin, and the CLI carries a personal token in CRM_GUARD_API_TOKEN."""
    users = tmp_path / "users"
    ann = add_user(users, "ann@acme.io", "reviewer")
    ops = add_user(users, "ops", "operator")
    async with review_server(kafka_bootstrap, unique, users_file=users) as (service, client):
        done = await client.post("/api/review/proposals/p-101/approve", json={"by": "the-ceo"},
                                 headers={"Authorization": f"Bearer {ann}"})
        assert done.status == 200 and (await done.json())["decided_by"] == "ann@acme.io"
        assert service.store.get("p-101").decided_by == "ann@acme.io"  # type: ignore[union-attr]
        pin = {"tier": "low", "level": "act", "by": "ann", "reason": "trial"}
        refused = await client.post("/api/agents/enricher/pin", json=pin, headers={"Authorization": f"Bearer {ann}"})
        assert refused.status == 403 and (await refused.json())["error"] == "forbidden_role"
        assert "pin" not in [h["kind"] for h in service.trust_snapshot("enricher")["history"]]
        pinned = await client.post("/api/agents/enricher/pin", json=pin, headers={"Authorization": f"Bearer {ops}"})
        assert pinned.status == 200 and (await pinned.json())["event"]["by"] == "ops"  # not the body's "ann"

        url = str(client.make_url("")).rstrip("/")
        monkeypatch.setenv("CRM_GUARD_API_TOKEN", ann)
        code, out, _ = await run_cli(["reject", "p-103", "--reason", "no", "--url", url, "--by", "bob"],
                                     monkeypatch, capsys)
        assert (code, out.strip()) == (0, "p-103: rejected")
        assert service.store.get("p-103").decided_by == "ann@acme.io"  # type: ignore[union-attr]
        monkeypatch.setenv("CRM_GUARD_API_TOKEN", ann + "-revoked")
        code, _, err = await run_cli(["approve", "p-102", "--url", url], monkeypatch, capsys)
        assert code == 2 and "CRM_GUARD_API_TOKEN" in err and "crm-guard users add" in err
