"""`crm-guard history` against local servers that answer and check requests as HubSpot, Salesforce
and Pipedrive do (auth header, paging parameters, 429 with Retry-After), then the replay of what
it wrote: the backtest path end to end, without the vendors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HS_TOKEN, SF_TOKEN, PD_TOKEN = "pat-na1-11111111", "00Dxx!AQ4AQ.token", "pd0123456789abcdef"
AGENT_APP, SF_AGENT, PD_AGENT = "1850301", "0055g00000002MnAAI", 13000103


def hubspot_contact(n: int) -> dict[str, Any]:
    return {"id": str(700 + n), "properties": {"utm_source": "enriched"}, "archived": False,
            "createdAt": f"2025-03-01T09:0{n}:00Z", "updatedAt": f"2025-03-04T01:1{n}:00Z",
            "propertiesWithHistory": {"utm_source": [
                {"value": "enriched", "timestamp": f"2025-03-04T01:1{n}:00Z", "sourceType": "INTEGRATION",
                 "sourceId": AGENT_APP},
                {"value": "google", "timestamp": f"2025-03-01T09:0{n}:00Z", "sourceType": "CRM_UI",
                 "sourceId": "userId:77"}]}}


def sf_row(n: int, contact: int, old: str | None, new: str, by: str, at: str) -> dict[str, Any]:
    return {"attributes": {"type": "ContactHistory", "url": f"/services/data/v62.0/sobjects/ContactHistory/{n}"},
            "Id": f"0175g{n:010d}AAA", "ContactId": f"0035g00000{contact:05d}AAA", "Field": "Title",
            "DataType": "Text", "OldValue": old, "NewValue": new, "CreatedById": by, "CreatedDate": at}


SF_ROWS = ([sf_row(c, c, None, "Engineer", "0055g00000001AbAAI", f"2025-03-01T09:0{c}:00.000+0000")
            for c in range(5)]
           + [sf_row(10 + c, c, "Engineer", "Enriched", SF_AGENT, f"2025-03-04T01:1{c}:00.000+0000")
              for c in range(5)])


def pd_changelog(deal: int) -> list[dict[str, Any]]:
    n = deal - 101
    return [
        {"field_key": "stage_id", "old_value": "3", "new_value": "1", "actor_user_id": PD_AGENT,
         "time": f"2025-03-05 1{n}:00:00", "change_source": "api", "is_bulk_update_flag": False},
        {"field_key": "stage_id", "old_value": "1", "new_value": "3", "actor_user_id": 7,
         "time": f"2025-03-03 0{n}:00:00", "change_source": "app", "is_bulk_update_flag": False},
    ]


class FakeVendors(BaseHTTPRequestHandler):
    """Routes by path; refuses what the real APIs refuse (wrong or missing auth: 401)."""

    seen: list[tuple[str, dict[str, list[str]]]] = []
    throttle_once: set[str] = set()

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.seen.append((url.path, query))
        if url.path in self.throttle_once:
            self.throttle_once.discard(url.path)
            return self.reply(429, {"status": "error", "message": "rate limited"}, {"Retry-After": "0"})
        if url.path.startswith("/crm/v3/objects/"):
            return self.hubspot(url.path, query)
        if url.path.startswith("/services/data/"):
            return self.salesforce(url.path, query)
        if url.path.startswith("/v1/"):
            return self.pipedrive(url.path, query)
        return self.reply(404, {"message": "no such route"})

    def hubspot(self, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return self.reply(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
        assert path == "/crm/v3/objects/contacts" and query["limit"] == ["50"]
        assert query["propertiesWithHistory"] == ["utm_source"]
        if query.get("after") == ["2"]:
            return self.reply(200, {"results": [hubspot_contact(2), hubspot_contact(3)]})
        return self.reply(200, {"results": [hubspot_contact(0), hubspot_contact(1)],
                                "paging": {"next": {"after": "2", "link": "..."}}})

    def salesforce(self, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Authorization") != f"Bearer {SF_TOKEN}":
            return self.reply(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        if path == "/services/data/v62.0/query":
            soql = query["q"][0]
            assert "FROM ContactHistory" in soql and "CreatedDate >= 2025-03-01T00:00:00Z" in soql
            return self.reply(200, {"totalSize": 10, "done": False, "records": SF_ROWS[:6],
                                    "nextRecordsUrl": "/services/data/v62.0/query/01gxx-6"})
        assert path == "/services/data/v62.0/query/01gxx-6"
        return self.reply(200, {"totalSize": 10, "done": True, "records": SF_ROWS[6:]})

    def pipedrive(self, path: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("x-api-token") != PD_TOKEN or "api_token" in query:
            return self.reply(401, {"success": False, "error": "unauthorized access", "errorCode": 401})
        if path == "/v1/deals":
            if query["start"] == ["0"]:
                deals = [{"id": 101, "update_time": "2025-03-05 10:00:00"},
                         {"id": 99, "update_time": "2025-01-01 00:00:00"}]  # untouched since --since
                more = {"start": 0, "limit": 500, "more_items_in_collection": True, "next_start": 2}
            else:
                deals = [{"id": 102, "update_time": "2025-03-05 11:00:00"},
                         {"id": 103, "update_time": "2025-03-05 12:00:00"}]
                more = {"start": 2, "limit": 500, "more_items_in_collection": False}
            return self.reply(200, {"success": True, "data": deals, "additional_data": {"pagination": more}})
        deal = int(path.split("/")[3])
        assert deal != 99, "a deal not updated since --since was read"
        entries = pd_changelog(deal)
        if query.get("cursor") == ["c2"]:
            return self.reply(200, {"success": True, "data": entries[1:], "additional_data": {"next_cursor": None}})
        return self.reply(200, {"success": True, "data": entries[:1], "additional_data": {"next_cursor": "c2"}})


@pytest.fixture
def vendors() -> Iterator[str]:
    FakeVendors.seen = []
    FakeVendors.throttle_once = {"/crm/v3/objects/contacts", "/v1/deals"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeVendors)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app.cli", *args], cwd=str(ROOT), capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


TOKENS = {"CRM_GUARD_HUBSPOT_TOKEN": HS_TOKEN, "CRM_GUARD_SALESFORCE_ACCESS_TOKEN": SF_TOKEN,
          "CRM_GUARD_PIPEDRIVE_API_TOKEN": PD_TOKEN}
POLICY = f"""
version: 1
agents:
  enrich-agent:
    identities:
    - {{vendor: hubspot, change_source: INTEGRATION, app_id: "{AGENT_APP}"}}
    - {{vendor: salesforce, user_id: {SF_AGENT}}}
    allowed_fields: [jobtitle, Title]
  pipeline-agent:
    identities: [{{vendor: pipedrive, user_id: "{PD_AGENT}", change_source: api}}]
    allowed_object_types: [deal]
    allowed_fields: [stage_id]
    high_tier_allowed: true
humans:
- {{vendor: hubspot, change_source: CRM_UI}}
- {{vendor: salesforce, user_id: 0055g00000001AbAAI}}
- {{vendor: pipedrive, change_source: app}}
"""


def test_history_of_three_crms_fetched_and_replayed_finds_each_agent(vendors: str, tmp_path: Path) -> None:
    hubspot = cli("history", "hubspot", "--object", "contacts", "--properties", "utm_source",
                  "--base-url", vendors, "--out", str(tmp_path / "hubspot.jsonl"), env=TOKENS)
    assert hubspot.returncode == 0, hubspot.stderr
    assert hubspot.stdout.startswith(f"4 objects written to {tmp_path / 'hubspot.jsonl'}")
    salesforce = cli("history", "salesforce", "--object", "Contact", "--since", "2025-03-01T00:00:00Z",
                     "--instance-url", vendors, "--out", str(tmp_path / "salesforce.jsonl"), env=TOKENS)
    assert salesforce.returncode == 0, salesforce.stderr
    pipedrive = cli("history", "pipedrive", "--entity", "deal", "--since", "2025-03-01T00:00:00Z",
                    "--base-url", vendors, "--out", str(tmp_path / "pipedrive.jsonl"), env=TOKENS)
    assert pipedrive.returncode == 0, pipedrive.stderr
    assert pipedrive.stdout.startswith("3 records written")
    paths = [p for p, _ in FakeVendors.seen]
    assert paths.count("/crm/v3/objects/contacts") == 3  # 429 once (Retry-After: 0), then two pages
    assert "/services/data/v62.0/query/01gxx-6" in paths and paths.count("/v1/deals/101/changelog") == 2

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    files = [str(tmp_path / f"{v}.jsonl") for v in ("hubspot", "salesforce", "pipedrive")]
    done = cli("replay", *files, "--policy", str(policy), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    alerts = {(a["kind"], a["agent"]) for a in map(json.loads, (tmp_path / "out" / "alerts.jsonl").open())}
    assert {("protected_field", "enrich-agent"), ("mass_overwrite", "enrich-agent"),
            ("stage_anomaly", "pipeline-agent")} <= alerts
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["events_by_source"] == {"hubspot": 12, "pipedrive": 6, "salesforce": 10}


def test_refused_tokens_missing_tokens_and_bad_arguments_say_what_and_exit_2(vendors: str, tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    wrong = cli("history", "hubspot", "--object", "contacts", "--properties", "utm_source", "--base-url", vendors,
                "--out", out, env={**TOKENS, "CRM_GUARD_HUBSPOT_TOKEN": "pat-expired"})
    assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr and "check CRM_GUARD_HUBSPOT_TOKEN" in wrong.stderr
    unset = cli("history", "pipedrive", "--entity", "deal", "--base-url", vendors, "--out", out,
                env={"CRM_GUARD_PIPEDRIVE_API_TOKEN": ""})
    assert unset.returncode == 2 and "set CRM_GUARD_PIPEDRIVE_API_TOKEN" in unset.stderr
    since = cli("history", "salesforce", "--object", "Contact", "--since", "last week", "--instance-url", vendors,
                "--out", out, env=TOKENS)
    assert since.returncode == 2 and "--since 'last week' is not a time" in since.stderr
    for done in (wrong, unset, since):
        assert "Traceback" not in done.stderr


def test_a_vendor_that_keeps_failing_exits_1_after_retries(tmp_path: Path) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), Failing) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            done = cli("history", "pipedrive", "--entity", "deal", "--base-url",
                       f"http://127.0.0.1:{server.server_address[1]}", "--out", str(tmp_path / "x.jsonl"), env=TOKENS)
        finally:
            server.shutdown()
    assert done.returncode == 1 and "HTTP 503" in done.stderr and "0 lines written" in done.stderr
    assert Failing.count == 6  # the first try and five retries


class Failing(BaseHTTPRequestHandler):
    count = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).count += 1
        self.send_response(503)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b"maintenance")


def test_a_salesforce_object_name_that_is_not_one_never_reaches_the_query(vendors: str, tmp_path: Path) -> None:
    done = cli("history", "salesforce", "--object", "Contact WHERE Id != null", "--since", "2025-03-01T00:00:00Z",
               "--instance-url", vendors, "--out", str(tmp_path / "x.jsonl"), env=TOKENS)
    assert done.returncode == 2 and "is not a Salesforce object name" in done.stderr
    assert FakeVendors.seen == []
