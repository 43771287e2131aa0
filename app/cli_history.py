"""`crm-guard history hubspot|salesforce|pipedrive`: fetch the CRM's own change history for a backtest.

    crm-guard history hubspot --object contacts --properties jobtitle,utm_source --out contacts.jsonl
    crm-guard history salesforce --object Contact --since 2025-03-01T00:00:00Z --instance-url URL \
        --out contacts.jsonl
    crm-guard history pipedrive --entity deal --since 2025-03-01T00:00:00Z --out deals.jsonl

then `crm-guard replay FILE... --policy policy.yaml --out DIR`. Tokens come from the environment
(never the command line, which `ps` shows): CRM_GUARD_HUBSPOT_TOKEN (a private app's access
token with the objects' read scopes), CRM_GUARD_SALESFORCE_ACCESS_TOKEN (an OAuth access token),
CRM_GUARD_PIPEDRIVE_API_TOKEN. Exit: 0 written; 2 a user error (no token, a token the vendor
refuses, bad arguments); 1 the vendor kept failing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from app.adapters.common import to_ms
from app.history_export import (
    PIPEDRIVE_ENTITIES,
    SOBJECT_NAME,
    ExportError,
    hubspot_api,
    hubspot_history,
    pipedrive_api,
    pipedrive_changelogs,
    salesforce_api,
    salesforce_history,
)

TOKEN_ENV = {"hubspot": "CRM_GUARD_HUBSPOT_TOKEN", "salesforce": "CRM_GUARD_SALESFORCE_ACCESS_TOKEN",
             "pipedrive": "CRM_GUARD_PIPEDRIVE_API_TOKEN"}


class _UserError(Exception):
    pass


def _token(vendor: str) -> str:
    token = os.environ.get(TOKEN_ENV[vendor], "").strip()
    if not token:
        raise _UserError(f"set {TOKEN_ENV[vendor]} to the {vendor} token "
                         "(not on the command line: ps shows it)")
    return token


def _since_ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return to_ms(text, "--since")
    except ValueError:
        raise _UserError(f"--since {text!r} is not a time (e.g. 2025-03-01T00:00:00Z)") from None


def _items(args: argparse.Namespace) -> Iterator[Any]:
    if args.vendor == "hubspot":
        properties = [p.strip() for p in args.properties.split(",") if p.strip()]
        if not properties:
            raise _UserError("--properties names at least one property")
        return hubspot_history(hubspot_api(_token("hubspot"), args.base_url or "https://api.hubapi.com"),
                               args.object, properties)
    if args.vendor == "salesforce":
        since = _since_ms(args.since)
        if not SOBJECT_NAME.match(args.object):
            raise _UserError(f"--object {args.object[:80]!r} is not a Salesforce object name "
                             "(Contact, Invoice__c)")
        api = salesforce_api(_token("salesforce"), args.instance_url)
        return salesforce_history(api, args.object, since or 0)
    return pipedrive_changelogs(pipedrive_api(_token("pipedrive"), args.base_url or "https://api.pipedrive.com"),
                                args.entity, _since_ms(args.since))


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = 0
    try:
        items = _items(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as handle:
            for item in items:
                handle.write(orjson.dumps(item) + b"\n")
                written += 1
    except _UserError as exc:
        print(f"crm-guard history {args.vendor}: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        refused = exc.status in (401, 403)
        hint = f" (check {TOKEN_ENV[args.vendor]} and its scopes)" if refused else ""
        print(f"crm-guard history {args.vendor}: {exc}{hint}; {written} lines written to {out}",
              file=sys.stderr)
        return 2 if refused else 1
    except OSError as exc:
        print(f"crm-guard history {args.vendor}: --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    what = {"hubspot": "objects", "salesforce": "rows", "pipedrive": "records"}[args.vendor]
    print(f"{written} {what} written to {out}; next: crm-guard replay {out} --policy POLICY --out DIR")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `history hubspot`, `history salesforce`, `history pipedrive`."""
    history = subparsers.add_parser("history", help="fetch a CRM's change history for `replay` (a backtest)")
    sub = history.add_subparsers(dest="vendor", metavar="VENDOR")
    sub.required = True
    hub = sub.add_parser("hubspot", help="objects with propertiesWithHistory (CRM_GUARD_HUBSPOT_TOKEN)")
    hub.add_argument("--object", required=True, help="contacts, companies, deals, tickets or an objectTypeId")
    hub.add_argument("--properties", required=True,
                     help="comma-separated: the properties whose history to read")
    hub.add_argument("--base-url", help="default https://api.hubapi.com (EU portals: https://api-eu1.hubapi.com)")
    sf = sub.add_parser("salesforce", help="field-history rows (CRM_GUARD_SALESFORCE_ACCESS_TOKEN)")
    sf.add_argument("--object", required=True, help="Contact, Account, Lead, Case, Opportunity, Custom__c")
    sf.add_argument("--since", required=True, help="ISO time, e.g. 2025-03-01T00:00:00Z")
    sf.add_argument("--instance-url", required=True, help="https://yourorg.my.salesforce.com")
    pd = sub.add_parser("pipedrive", help="changelogs of every record (CRM_GUARD_PIPEDRIVE_API_TOKEN)")
    pd.add_argument("--entity", required=True, choices=PIPEDRIVE_ENTITIES)
    pd.add_argument("--since", help="ISO time: skip records not updated since, and older entries")
    pd.add_argument("--base-url", help="https://yourcompany.pipedrive.com/api (default https://api.pipedrive.com)")
    for parser in (hub, sf, pd):
        parser.add_argument("--out", required=True, metavar="FILE", help="JSON Lines for `crm-guard replay`")
        parser.set_defaults(func=_run)
