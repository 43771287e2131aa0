"""Fetch a CRM's own change history into JSON Lines that `crm-guard replay` reads (backtests).

    hubspot_history(api, object_type, properties)   GET /crm/v3/objects/{type}?propertiesWithHistory=...
    salesforce_history(api, history_object, since)  SOQL on {Object}History, nextRecordsUrl paging
    pipedrive_changelogs(api, entity, since)        every record's /v1/{entity}s/{id}/changelog

Each yields the JSON values to write, one per line, in the shapes app/adapters/*_history.py read.
`VendorApi` is the HTTP side: the token in a header (never in a URL), retries of 429 (after its
Retry-After) and 5xx with backoff, a timeout per request, and an ExportError with the vendor's
answer otherwise. Plain urllib: a CLI run, one request at a time, within the vendors' rate limits.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from app.adapters.common import to_ms

SALESFORCE_API_VERSION = "v62.0"
HUBSPOT_PAGE = 50  # the most objects HubSpot returns per page when history is asked for
PIPEDRIVE_PAGE = 500


class ExportError(Exception):
    """A request the vendor refused or that kept failing; `status` is its HTTP status (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class VendorApi:
    """GET JSON from one vendor's API with its authentication header."""

    def __init__(self, base_url: str, headers: dict[str, str], *, retries: int = 5, timeout_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Accept": "application/json", **headers}
        self.retries = retries
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.requests = 0

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The decoded JSON body of GET base_url + path (+ query)."""
        url = self.base_url + path
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(
                {k: v for k, v in params.items() if v is not None})
        for attempt in range(self.retries + 1):
            self.requests += 1
            request = urllib.request.Request(url, headers=self.headers)  # noqa: S310 - http(s) from the user
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as exc:
                body = exc.read()[:500].decode("utf-8", "replace")
                if (exc.code == 429 or exc.code >= 500) and attempt < self.retries:
                    self.sleep(_retry_after(exc.headers.get("Retry-After"), attempt))
                    continue
                raise ExportError(f"GET {path}: HTTP {exc.code}: {body or exc.reason}", exc.code) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.retries:
                    self.sleep(_retry_after(None, attempt))
                    continue
                raise ExportError(f"GET {path}: {getattr(exc, 'reason', exc)}") from None
            except json.JSONDecodeError:
                raise ExportError(f"GET {path}: the answer is not JSON") from None
        raise ExportError(f"GET {path}: gave up after {self.retries} retries")  # pragma: no cover


def _retry_after(header: str | None, attempt: int) -> float:
    try:
        return min(60.0, max(0.0, float(header))) if header else min(30.0, 0.5 * 2 ** attempt)
    except ValueError:
        return min(30.0, 0.5 * 2 ** attempt)


# ---- HubSpot -----------------------------------------------------------------------------------


def hubspot_api(token: str, base_url: str = "https://api.hubapi.com") -> VendorApi:
    return VendorApi(base_url, {"Authorization": f"Bearer {token}"})


def hubspot_history(api: VendorApi, object_type: str, properties: list[str]) -> Iterator[dict[str, Any]]:
    """Every object of a type with the history of `properties`, tagged with its objectType."""
    after: str | None = None
    while True:
        page = api.get(f"/crm/v3/objects/{urllib.parse.quote(object_type)}", {
            "limit": HUBSPOT_PAGE, "archived": "false", "properties": ",".join(properties),
            "propertiesWithHistory": ",".join(properties), "after": after})
        for obj in _list(page, "results"):
            yield {**obj, "objectType": object_type}
        after = ((page.get("paging") or {}).get("next") or {}).get("after")
        if not after:
            return


# ---- Salesforce --------------------------------------------------------------------------------

_SF_PARENT = {"Opportunity": ("OpportunityFieldHistory", "OpportunityId")}


def salesforce_api(token: str, instance_url: str) -> VendorApi:
    return VendorApi(instance_url, {"Authorization": f"Bearer {token}"})


SOBJECT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")


def salesforce_soql(sobject: str, since_ms: int) -> str:
    """The field-history query of an object (Contact, Opportunity, Invoice__c ...) since a time.
    Both parts are checked or rendered here, so nothing else reaches the query text."""
    if not SOBJECT_NAME.match(sobject):
        raise ValueError(f"{sobject[:80]!r} is not a Salesforce object name")
    if sobject.endswith("__c"):
        history, parent = sobject[:-3] + "__History", "ParentId"
    else:
        history, parent = _SF_PARENT.get(sobject, (f"{sobject}History", f"{sobject}Id"))
    since = datetime.fromtimestamp(since_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"SELECT Id, {parent}, Field, DataType, OldValue, NewValue, CreatedById, CreatedDate "  # noqa: S608
            f"FROM {history} WHERE CreatedDate >= {since} ORDER BY CreatedDate")


def salesforce_history(api: VendorApi, sobject: str, since_ms: int,
                       version: str = SALESFORCE_API_VERSION) -> Iterator[dict[str, Any]]:
    """Every field-history row of an object since a time (ms)."""
    page = api.get(f"/services/data/{version}/query", {"q": salesforce_soql(sobject, since_ms)})
    while True:
        yield from _list(page, "records")
        next_url = page.get("nextRecordsUrl")
        if page.get("done", True) or not next_url:
            return
        page = api.get(next_url)


# ---- Pipedrive ---------------------------------------------------------------------------------

PIPEDRIVE_ENTITIES = ("deal", "person", "organization")


def pipedrive_api(token: str, base_url: str = "https://api.pipedrive.com") -> VendorApi:
    return VendorApi(base_url, {"x-api-token": token})


def pipedrive_changelogs(api: VendorApi, entity: str,
                         since_ms: int | None = None) -> Iterator[dict[str, Any]]:
    """Every record's changelog (`{"entity", "id", "data": [...]}`), skipping records not
    updated since `since_ms` and entries before it."""
    start: int | None = 0
    while start is not None:
        page = api.get(f"/v1/{entity}s", {"start": start, "limit": PIPEDRIVE_PAGE})
        for record in _list(page, "data"):
            if since_ms is not None and _pd_ms(record.get("update_time")) < since_ms:
                continue
            entries = list(_pd_changelog(api, entity, record["id"]))
            if since_ms is not None:
                entries = [e for e in entries if _pd_ms(e.get("time")) >= since_ms]
            if entries:
                yield {"entity": entity, "id": record["id"], "data": entries}
        pagination = ((page.get("additional_data") or {}).get("pagination") or {})
        start = pagination.get("next_start") if pagination.get("more_items_in_collection") else None


def _pd_changelog(api: VendorApi, entity: str, record_id: Any) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        page = api.get(f"/v1/{entity}s/{record_id}/changelog", {"limit": PIPEDRIVE_PAGE, "cursor": cursor})
        yield from _list(page, "data")
        cursor = (page.get("additional_data") or {}).get("next_cursor")
        if not cursor:
            return


def _pd_ms(value: Any) -> int:
    """Pipedrive's "YYYY-MM-DD HH:MM:SS" (UTC) as ms; far ahead when absent or unreadable, so
    that what cannot be told apart is kept, not skipped."""
    if not value:
        return 2**62
    try:
        return to_ms(value, "time")
    except ValueError:
        return 2**62


def _list(page: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(page, dict):
        raise ExportError(f"unexpected answer: a JSON {type(page).__name__}, not an object with {key}")
    items = page.get(key) or []
    if not isinstance(items, list):
        raise ExportError(f"unexpected answer: {key} is not a list")
    return [item for item in items if isinstance(item, dict)]
