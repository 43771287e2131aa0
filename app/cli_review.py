"""`crm-guard review`: the review queue from a terminal, through the guard's HTTP API.

    crm-guard review list [--agent A] [--kind K] [--field F] [--tier T] [--status S] [--json]
    crm-guard review show ID [--json]
    crm-guard review approve ID [--reason R]
    crm-guard review approve --agent A [--field F] [--kind K] [--tier T] [--reason R]   (batch)
    crm-guard review modify ID --set field=value [--set ...] [--reason R]
    crm-guard review reject ID --reason R [--category C]

Every command takes `--url` (default: the settings' public_url) and `--by` (default: the login
name). `--set` values are JSON when they parse as JSON (5000, true, null, "quoted"), else text.
Exit codes: 0 done; 2 a user error (bad arguments, unknown id, already decided); 1 the guard
could not be reached or failed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

from app.cli_types import positive_float
from app.review.models import REJECT_CATEGORIES


class CliError(Exception):
    """A failure to report in one line; `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `review` and its sub-commands to the crm-guard parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the guard's base URL (default: settings public_url)")
    common.add_argument("--by", help="who decides (default: your login name)")
    common.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for the guard")

    review = subparsers.add_parser("review", help="list and decide proposals in the review queue")
    sub = review.add_subparsers(dest="review_command", metavar="ACTION")

    p = sub.add_parser("list", parents=[common], help="pending proposals grouped by agent and kind")
    _filters(p)
    p.add_argument("--status", default="pending",
                   choices=["pending", "approved", "modified", "rejected", "expired", "all"])
    p.add_argument("--json", action="store_true", help="print the API's JSON")

    p = sub.add_parser("show", parents=[common], help="one proposal with current and proposed values")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print the API's JSON")

    p = sub.add_parser("approve", parents=[common], help="approve one proposal, or all matching a filter")
    p.add_argument("id", nargs="?")
    _filters(p)
    p.add_argument("--reason", default="")

    p = sub.add_parser("modify", parents=[common], help="approve with changed values")
    p.add_argument("id")
    p.add_argument("--set", dest="sets", action="append", required=True, metavar="FIELD=VALUE")
    p.add_argument("--reason", default="")

    p = sub.add_parser("reject", parents=[common], help="reject with a reason (sent to the agent)")
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p.add_argument("--category", default="other", choices=REJECT_CATEGORIES)

    review.set_defaults(func=handle)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent")
    p.add_argument("--kind", help="e.g. contact.jobtitle or deal.dealstage")
    p.add_argument("--field")
    p.add_argument("--tier", choices=["low", "medium", "high"])


def handle(args: argparse.Namespace) -> int:
    """Run one review action; returns the exit code."""
    command = getattr(args, "review_command", None)
    if not command:
        print("crm-guard review: choose an action: list, show, approve, modify or reject", file=sys.stderr)
        return 2
    try:
        client = _Client(args.url or _default_url(), args.timeout, _api_token())
        return int(_ACTIONS[command](client, args))
    except CliError as exc:
        print(f"crm-guard review {command}: {exc}", file=sys.stderr)
        return exc.code


def _default_url() -> str:
    from app.config import load_settings

    return load_settings().public_url


def _api_token() -> str | None:
    """The operator token the guard's API wants for decisions (CRM_GUARD_API_TOKEN or the config
    file's api_token); never a command-line argument, which other users could read in `ps`."""
    from app.config import load_settings

    secret = load_settings().api_token  # a broken config is reported (exit 2), not read as "no token"
    return secret.get_secret_value() if secret is not None else None


class _Client:
    def __init__(self, base: str, timeout: float, token: str | None = None) -> None:
        if not base.startswith(("http://", "https://")):
            raise CliError(f"--url must start with http:// or https://, got {base!r}", 2)
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, method=method,  # noqa: S310 - http(s) only
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read())
                reason, message = answer.get("error") or exc.reason, answer.get("message")
            except (ValueError, AttributeError):
                reason, message = exc.reason, None
            if exc.code == 401:
                raise CliError("the guard wants an API token for this: set CRM_GUARD_API_TOKEN to the operator "
                               f"token or your own from `crm-guard users add` ({reason})", 2) from None
            if exc.code == 403:
                raise CliError(f"{message or reason}", 2) from None
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise CliError(str(reason), 2) from None
            raise CliError(f"the guard answered {exc.code}: {reason}", 1) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the guard at {self.base} ({why}); is it running? (--url)", 1) from None


def _by(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise CliError("cannot tell who you are: pass --by NAME", 2) from None


def _query(args: argparse.Namespace, **extra: str) -> str:
    params = {k: v for k, v in {"agent": args.agent, "kind": args.kind, "field": args.field,
                                "tier": args.tier, **extra}.items() if v}
    return "?" + urllib.parse.urlencode(params) if params else ""


def _path_id(proposal_id: str) -> str:
    return urllib.parse.quote(proposal_id, safe="")


# ---- actions ----------------------------------------------------------------------------------

def _list(client: _Client, args: argparse.Namespace) -> int:
    data = client.call("GET", "/api/review/proposals" + _query(args, status=args.status))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    if not data["groups"]:
        print("nothing to review" if args.status == "pending" else "no proposals")
        return 0
    for group in data["groups"]:
        print(f"{group['agent']} · {group['kind']} ({group['count']})")
        for item in group["items"]:
            values = "; ".join(f"{f['field']}: {_current(f)} -> {_fmt(f['proposed'])}" for f in item["fields"])
            conf = "" if item.get("confidence") is None else f"  conf {round(item['confidence'] * 100)}%"
            status = "" if item["status"] == "pending" else f"  [{item['status']}]"
            print(f"  {item['proposal_id']}  {item['object_type']} {item['record_id']}  {values}{conf}{status}")
            if item.get("reason"):
                print(f"      why: {_cut(item['reason'], 110)}")
    print(f"{data['total']} proposal(s)")
    return 0


def _show(client: _Client, args: argparse.Namespace) -> int:
    item = client.call("GET", f"/api/review/proposals/{_path_id(args.id)}")
    if args.json:
        print(json.dumps(item, indent=2, ensure_ascii=False))
        return 0
    _print_item(item)
    return 0


def _approve(client: _Client, args: argparse.Namespace) -> int:
    filters = {k: getattr(args, k) for k in ("agent", "kind", "field", "tier") if getattr(args, k)}
    by = _by(args)
    if args.id and filters:
        raise CliError("give either an ID or a filter (--agent/--kind/--field/--tier), not both", 2)
    if args.id:
        item = client.call("POST", f"/api/review/proposals/{_path_id(args.id)}/approve",
                           {"by": by, "reason": args.reason})
        print(f"{item['proposal_id']}: {item['status']}")
        return 0
    if not filters:
        raise CliError("give an ID, or --agent (with --field/--kind/--tier) to approve in a batch", 2)
    result = client.call("POST", "/api/review/batch-approve", {"by": by, "reason": args.reason, "filter": filters})
    for pid in result["approved"]:
        print(f"{pid}: approved")
    for skipped in result["skipped"]:
        print(f"{skipped['proposal_id']}: skipped ({skipped['reason']})")
    print(f"approved {len(result['approved'])} proposal(s)")
    return 0


def _modify(client: _Client, args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    for item in args.sets:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--set wants FIELD=VALUE, got {item!r}", 2)
        values[name.strip()] = _parse_value(raw)
    item = client.call("POST", f"/api/review/proposals/{_path_id(args.id)}/modify",
                       {"by": _by(args), "reason": args.reason, "set": values})
    print(f"{item['proposal_id']}: {item['status']}")
    return 0


def _reject(client: _Client, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise CliError("--reason must not be empty: the agent learns from it", 2)
    item = client.call("POST", f"/api/review/proposals/{_path_id(args.id)}/reject",
                       {"by": _by(args), "reason": args.reason, "category": args.category})
    print(f"{item['proposal_id']}: {item['status']}")
    return 0


_ACTIONS = {"list": _list, "show": _show, "approve": _approve, "modify": _modify, "reject": _reject}


# ---- formatting -------------------------------------------------------------------------------

def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _fmt(value: Any) -> str:
    if value is None:
        return "(empty)"
    return json.dumps(value, ensure_ascii=False)


def _current(field: dict[str, Any]) -> str:
    return _fmt(field.get("current")) if field.get("current_known") else "(unknown)"


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_item(item: dict[str, Any]) -> None:
    print(f"proposal   {item['proposal_id']}  [{item['status']}]")
    print(f"agent      {item['agent']}   kind {item['kind']}   tier {item.get('tier')}")
    print(f"record     {item['record_key']}  ({item['operation']})")
    print(f"proposed   {_time(item.get('proposed_at'))}"
          + ("" if item.get("confidence") is None else f"   confidence {round(item['confidence'] * 100)}%"))
    width = max([len(f["field"]) for f in item["fields"]] + [5])
    print(f"  {'field'.ljust(width)}  current -> proposed")
    for f in item["fields"]:
        applied = f"   (applied {_fmt(f['applied'])})" if "applied" in f else ""
        print(f"  {f['field'].ljust(width)}  {_current(f)} -> {_fmt(f['proposed'])}{applied}")
    print(f"reason     {item.get('reason') or '-'}")
    if item.get("evidence") is not None:
        print(f"evidence   {json.dumps(item['evidence'], ensure_ascii=False)}")
    gate = item.get("gate") or {}
    print(f"gate       {gate.get('action')}: {gate.get('reason')}")
    if item["status"] != "pending":
        print(f"decided    {item['status']} by {item.get('decided_by')} at {_time(item.get('decided_at'))}"
              + (f": {item['decision_reason']}" if item.get("decision_reason") else ""))
