"""Timeline API and pages: who changed what on a record, what an agent did, and how to undo it.

Routes (record keys contain slashes, e.g. `hubspot/contact/123`: they are matched with `.+` and
may be written plainly or URL-encoded):

  GET /api/records/{record_key}/timeline   paged changes of a record, with attachments
  GET /api/agents/{agent}/timeline          changes on every record the agent touched
  GET /api/agents/{agent}/revert-plan       ?since=24h|ISO|ms [&field=F ...] [&until=...]
  GET /api/timeline/records                 most recently changed records
  GET /api/timeline/agents                  agents seen on the timeline
  GET /records/{record_key}                 page: the record's timeline, human and agent lanes
  GET /agents/{agent}                       page: the agent's recent changes, open alerts, trust
  GET /timeline (and / unless index_at_root=False)   page: recent records and agents
  GET /timeline-assets/{name}               CSS and JS of these pages

Query parameters of the timeline APIs: `limit` (1-1000, default 100), `cursor` (from
`next_cursor`), `field` and `kind` (repeatable or comma-separated), `actor`, `since`, `until`
(epoch ms, ISO 8601, or a duration such as 24h meaning before now), `order` (asc|desc);
agents also `only_agent=1`. Values are masked (e-mail, phone) unless show_pii is on.

Application keys read (document them in server.py):
  app[TIMELINE]  TimelineStore (required)
  app[SHOW_PII]  bool (optional; else app[SETTINGS].show_pii; else False)
  app[ALERTS]    optional: a list of Alert dicts/models, or a callable returning one
  app[BOARD]     optional fallback for alerts: an object with `open_for(agent)` and `paused`
  app[TRUST]     optional: {agent: {tier: value-or-dict}} or a callable(agent) returning that
  app[REVIEW]    optional fallback for trust: an object with `trust_snapshot(agent)` (ReviewService)
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from app.timeline.masking import mask_value
from app.timeline.store import Page, Query, TimelineStore, decode_cursor
from app.timeline.times import iso, now_ms, parse_time
from app.web.keys import ALERTS, BOARD, REVIEW, SETTINGS, SHOW_PII, TIMELINE, TRUST
from detectors.revert_plan import revert_plan

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
ASSETS = {"timeline.css": "text/css", "timeline.js": "application/javascript"}
KINDS = ("human", "agent", "automation", "import", "integration", "unknown")
LANES = (("human", "Humans", ("human",)), ("agent", "Agents", ("agent",)),
         ("other", "Automation, imports, integrations, unknown", ("automation", "import", "integration", "unknown")))
PAGE_LIMIT = 200


def add_routes(app: web.Application, *, index_at_root: bool = True) -> None:
    """Register the timeline API and pages on the guard's application."""
    r = app.router
    r.add_get("/api/records/{record_key:.+}/timeline", api_record_timeline)
    r.add_get("/api/agents/{agent}/timeline", api_agent_timeline)
    r.add_get("/api/agents/{agent}/revert-plan", api_revert_plan)
    r.add_get("/api/timeline/records", api_recent_records)
    r.add_get("/api/timeline/agents", api_agents)
    r.add_get("/records/{record_key:.+}", page_record)
    r.add_get("/agents/{agent}", page_agent)
    r.add_get("/timeline", page_index)
    if index_at_root:
        r.add_get("/", page_index)
    r.add_get("/timeline-assets/{name}", asset)


# ---------------------------------------------------------------- helpers


def _store(request: web.Request) -> TimelineStore:
    store: TimelineStore | None = request.app.get(TIMELINE)
    if store is None:
        raise web.HTTPServiceUnavailable(text='{"error": "timeline store not configured"}',
                                         content_type="application/json")
    return store


def _show_pii(request: web.Request) -> bool:
    if SHOW_PII in request.app:
        return bool(request.app[SHOW_PII])
    settings = request.app.get(SETTINGS)
    return bool(getattr(settings, "show_pii", False))


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _multi(request: web.Request, name: str) -> frozenset[str]:
    values: set[str] = set()
    for raw in request.query.getall(name, []):
        values.update(v.strip() for v in raw.split(",") if v.strip())
    return frozenset(values)


def _time(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_time(raw, now_ms())
    except ValueError as exc:
        raise _bad(f"{name}: {exc}") from None


def _query(request: web.Request) -> Query:
    kinds = _multi(request, "kind")
    unknown = kinds - set(KINDS)
    if unknown:
        raise _bad(f"kind: unknown actor kind {sorted(unknown)[0]!r} (one of {', '.join(KINDS)})")
    return Query(fields=_multi(request, "field"), kinds=kinds, actors=_multi(request, "actor"),
                 since=_time(request, "since"), until=_time(request, "until"))


def _paging(request: web.Request, default_newest: bool, default_limit: int = 100) -> tuple[str | None, int, bool]:
    try:
        limit = int(request.query.get("limit", default_limit))
    except ValueError:
        raise _bad("limit: expected an integer") from None
    if not 1 <= limit <= 1000:
        raise _bad("limit: must be between 1 and 1000")
    cursor = request.query.get("cursor") or None
    if cursor:
        try:
            decode_cursor(cursor)
        except ValueError as exc:
            raise _bad(f"cursor: {exc}") from None
    order = request.query.get("order", "desc" if default_newest else "asc")
    if order not in ("asc", "desc"):
        raise _bad("order: asc or desc")
    return cursor, limit, order == "desc"


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


def record_url(record_key: str) -> str:
    """The page of a record (slashes kept readable, everything else encoded)."""
    return "/records/" + quote(record_key, safe="/")


def agent_url(agent: str) -> str:
    return "/agents/" + quote(agent, safe="")


# ---------------------------------------------------------------- JSON API


async def api_record_timeline(request: web.Request) -> web.Response:
    store = _store(request)
    record_key = request.match_info["record_key"]
    query = _query(request)
    cursor, limit, newest = _paging(request, default_newest=False)
    if not store.has_record(record_key):
        return web.json_response({"error": f"no timeline for record {record_key}"}, status=404)
    page = store.record_timeline(record_key, query, cursor=cursor, limit=limit, newest_first=newest,
                                 show_pii=_show_pii(request))
    body = {"record_key": record_key, **page.to_dict(), "masked": not _show_pii(request),
            "proposals": store.record_proposals(record_key, _show_pii(request))}
    return web.json_response(body)


async def api_agent_timeline(request: web.Request) -> web.Response:
    store = _store(request)
    agent = request.match_info["agent"]
    query = _query(request)
    cursor, limit, newest = _paging(request, default_newest=True)
    page = store.agent_timeline(agent, query, only_agent=_truthy(request.query.get("only_agent")), cursor=cursor,
                                limit=limit, newest_first=newest, show_pii=_show_pii(request))
    return web.json_response({"agent": agent, **page.to_dict(), "masked": not _show_pii(request),
                              "records": len(store.agent_records(agent))})


async def api_revert_plan(request: web.Request) -> web.Response:
    store = _store(request)
    agent = request.match_info["agent"]
    since = _time(request, "since")
    if since is None:
        raise _bad("since: required (ISO 8601, epoch ms, or a duration such as 24h)")
    until = _time(request, "until")
    fields = _multi(request, "field") or None
    plan = revert_plan(store.entries_for_agent(agent), agent, since, fields, until)
    body = plan.to_dict()
    show = _show_pii(request)
    body["masked"] = not show
    if not show:
        mask_plan(body)
    return web.json_response(body)


async def api_recent_records(request: web.Request) -> web.Response:
    _, limit, _ = _paging(request, default_newest=True, default_limit=50)
    return web.json_response({"records": _store(request).recent_records(limit)})


async def api_agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": _store(request).agents()})


def mask_plan(body: dict[str, Any]) -> dict[str, Any]:
    """Mask the values of a plan's JSON in place; marks each item or skip whose values changed."""
    for group in ("items", "skipped_human_changed", "skipped"):
        for item in body.get(group, ()):
            changed = False
            for key in ("restore_value", "agent_value", "current_value", "human_value"):
                if key in item:
                    masked = mask_value(item[key], item["field"], item["source"])
                    changed |= masked != item[key]
                    item[key] = masked
            for later in item.get("later_changes", ()):
                masked = mask_value(later.get("value"), item["field"], item["source"])
                changed |= masked != later.get("value")
                later["value"] = masked
            item["masked"] = changed
    return body


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=ASSETS[name],
                        headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------- pages


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _render(title: str, body: str, show_pii: bool) -> web.Response:
    template = Template((TEMPLATES / "timeline_page.html").read_text())
    note = ("values shown in full (show_pii is on)" if show_pii
            else "e-mail addresses and phone numbers are masked")
    text = template.safe_substitute(title=_e(title), body=body, pii_note=_e(note))
    return web.Response(text=text, content_type="text/html")


def _show(value: Any, limit: int = 120) -> str:
    if value is None:
        return '<span class="empty">(empty)</span>'
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if text == "":
        return '<span class="empty">(empty)</span>'
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return f'<span class="val" title="{_e(text)}">{_e(short)}</span>'


def _lane_of(kind: str) -> str:
    for lane, _, kinds in LANES:
        if kind in kinds:
            return lane
    return "other"


def _group_events(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive items of one event become one card."""
    groups: list[list[dict[str, Any]]] = []
    for item in items:
        if groups and groups[-1][0]["event_id"] == item["event_id"]:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _badges(items: list[dict[str, Any]]) -> str:
    """Badges of one event's card: attachments are per event, so every item carries the same ones."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for item in items[:1]:
        for finding in item.get("findings", ()):
            key = ("finding", f"{finding.get('detector')}|{finding.get('group')}")
            if key in seen:
                continue
            seen.add(key)
            sev = _e(finding.get("severity", "info"))
            out.append(f'<span class="badge finding sev-{sev}" title="{_e(finding.get("summary", ""))}">'
                       f'{sev} · {_e(finding.get("detector"))}</span>')
        for override in item.get("overrides", ()):
            details = override.get("details") or {}
            agent = details.get("agent") or override.get("agent") or "an agent"
            out.append(f'<span class="badge override" title="{_e(override.get("summary", ""))}">'
                       f'↩ overrides {_e(agent)}</span>')
        for override in item.get("overridden_by", ()):
            out.append(f'<span class="badge overridden" title="{_e(override.get("summary", ""))}">'
                       f'overridden by a human</span>')
        for decision in item.get("decisions", ()):
            key = ("decision", f"{decision.get('proposal_id')}|{decision.get('decision')}")
            if key in seen:
                continue
            seen.add(key)
            who = decision.get("decided_by") or "gate"
            out.append(f'<span class="badge decision" title="{_e(decision.get("reason", ""))}">'
                       f'proposal {_e(decision.get("decision"))} by {_e(who)}</span>')
    return f'<div class="badges">{"".join(out)}</div>' if out else ""


def _card(items: list[dict[str, Any]], with_record: bool) -> str:
    first = items[0]
    kind = first["actor_kind"]
    rec = ""
    if with_record:
        rec = f' <a class="rec" href="{_e(record_url(first["record_key"]))}">{_e(first["record_key"])}</a>'
    changes = []
    for item in items:
        if not item["field"]:
            continue
        old = _show(item["old"]) if item["has_old"] else '<span class="empty">(not seen)</span>'
        changes.append(f'<li><code class="field">{_e(item["field"])}</code> '
                       f'<span class="old">{old}</span> <span class="arrow">→</span> '
                       f'<span class="new">{_show(item["new"])}</span></li>')
    change_list = f'<ul class="changes">{"".join(changes)}</ul>' if changes else ""
    return (
        f'<article class="card kind-{_e(kind)}" data-event-id="{_e(first["event_id"])}" '
        f'data-actor="{_e(first["actor_id"])}" data-kind="{_e(kind)}">'
        f'<header><span class="chip kind-{_e(kind)}">{_e(kind)}</span> '
        f'<b class="actor">{_e(first["actor_id"])}</b> <span class="op">{_e(first["operation"])}</span>{rec}</header>'
        f"{change_list}{_badges(items)}</article>"
    )


def _lanes(page: Page, with_record: bool) -> str:
    head = "".join(f'<div class="lane-h lane-{lane}">{_e(label)}</div>' for lane, label, _ in LANES)
    rows = []
    for items in _group_events(page.items):
        first = items[0]
        lane = _lane_of(first["actor_kind"])
        cells = "".join(
            f'<div class="lane lane-{name}">{_card(items, with_record) if name == lane else ""}</div>'
            for name, _, _ in LANES
        )
        rows.append(f'<div class="row" data-kind="{_e(first["actor_kind"])}" data-lane="{lane}">'
                    f'<div class="when"><time datetime="{_e(first["occurred_at"])}">'
                    f'{_e(iso(first["occurred_at"]))}</time></div>{cells}</div>')
    if not rows:
        rows.append('<p class="none">No changes match.</p>')
    return f'<section class="timeline"><div class="row lanes-head"><div class="when">Time (UTC)</div>{head}</div>' \
           f'{"".join(rows)}</section>'


def _legend() -> str:
    chips = "".join(
        f'<label class="chip kind-{k}"><input type="checkbox" class="kind-toggle" data-kind="{k}" checked> {k}</label>'
        for k in KINDS
    )
    title = '<span class="legend-title">Show on this page:</span>'
    return f'<div class="legend" aria-label="actor kinds">{title}{chips}</div>'


def _filters(request: web.Request, fields: Iterable[str], extra: str = "") -> str:
    q = request.query
    chosen = set(_multi(request, "field"))
    options = "".join(f'<option value="{_e(f)}"{" selected" if f in chosen else ""}>{_e(f)}</option>'
                      for f in sorted(fields))
    kinds = set(_multi(request, "kind"))
    kind_boxes = "".join(
        f'<label><input type="checkbox" name="kind" value="{k}"{" checked" if k in kinds else ""}> {k}</label>'
        for k in KINDS
    )
    return (
        '<form class="filters" method="get">'
        f'<label>Field <select name="field"><option value="">all</option>{options}</select></label>'
        f'<fieldset><legend>Only changes by</legend>{kind_boxes}</fieldset>'
        f'<label>Since <input name="since" value="{_e(q.get("since", ""))}" placeholder="24h or 2024-05-01T00:00Z"></label>'
        f'<label>Until <input name="until" value="{_e(q.get("until", ""))}" placeholder="ISO or ms"></label>'
        f'{extra}<button type="submit">Filter</button></form>'
    )


def _pager(request: web.Request, page: Page) -> str:
    if not page.next_cursor:
        return f'<nav class="pager"><span>{page.total} changes</span></nav>'
    params = [(k, v) for k, v in request.query.items() if k != "cursor"] + [("cursor", page.next_cursor)]
    return (f'<nav class="pager"><span>{page.total} changes</span> '
            f'<a class="older" href="?{_e(urlencode(params))}">older changes →</a></nav>')


async def page_record(request: web.Request) -> web.Response:
    store = _store(request)
    record_key = request.match_info["record_key"]
    show = _show_pii(request)
    try:
        query = _query(request)
        cursor, _, _ = _paging(request, default_newest=True)
    except web.HTTPBadRequest as exc:
        return _render("Bad request", f'<p class="error">{_e(json.loads(exc.text or "{}").get("error"))}</p>', show)
    if not store.has_record(record_key):
        body = (f'<h1>{_e(record_key)}</h1><p class="none">The guard has no changes for this record '
                f'(unknown key, or older than the retention).</p>')
        return web.Response(status=404, text=_render(record_key, body, show).text, content_type="text/html")
    page = store.record_timeline(record_key, query, cursor=cursor, limit=PAGE_LIMIT, newest_first=True,
                                 show_pii=show)
    entries = store.record_entries(record_key)
    agents = sorted({e.actor_id for e in entries if e.actor_kind.value == "agent"})
    humans = sorted({e.actor_id for e in entries if e.actor_kind.value == "human"})
    first = entries[0] if entries else None
    agent_links = ", ".join(f'<a href="{_e(agent_url(a))}">{_e(a)}</a>' for a in agents) or "none"
    meta = (f'<p class="meta">{_e(first.source) if first else ""} · {_e(first.object_type) if first else ""} · '
            f'id {_e(first.record_id) if first else ""} · {len(entries)} field changes · '
            f'last change {_e(iso(entries[-1].occurred_at) if entries else "")}</p>'
            f'<p class="meta">Agents: {agent_links} · Humans: {len(humans)}</p>')
    proposals = store.record_proposals(record_key, show)
    prop_html = ""
    if proposals:
        rows = "".join(
            f'<tr><td>{_e(pid)}</td><td>{_e(d["decision"])}</td><td>{_e(d.get("decided_by") or "gate")}</td>'
            f'<td>{_e(iso(d["decided_at"]))}</td><td>{_e(d.get("reason", ""))}</td></tr>'
            for pid, ds in proposals.items() for d in ds
        )
        prop_html = ('<section class="proposals"><h2>Proposals and decisions</h2><table><thead><tr><th>Proposal</th>'
                     f'<th>Decision</th><th>By</th><th>When</th><th>Reason</th></tr></thead><tbody>{rows}</tbody>'
                     '</table></section>')
    body = (f'<section class="head"><h1 class="record-key">{_e(record_key)}</h1>{meta}'
            f'{_filters(request, {e.field for e in entries if e.field})}{_legend()}</section>'
            f'{_lanes(page, with_record=False)}{_pager(request, page)}{prop_html}')
    return _render(record_key, body, show)


def _open_alerts(app: web.Application) -> list[dict[str, Any]]:
    """Every open alert (app[ALERTS], else the board), newest evidence first."""
    source: Any = app.get(ALERTS)
    alerts: Iterable[Any] = ()
    if callable(source):
        alerts = source()
    elif source is not None:
        alerts = source
    elif app.get(BOARD) is not None and hasattr(app[BOARD], "open_for"):
        alerts = app[BOARD].open_for(None)
    out = []
    for alert in alerts or ():
        data = alert.model_dump(mode="json") if hasattr(alert, "model_dump") else dict(alert)
        if data.get("status", "open") == "open":
            out.append(data)
    return sorted(out, key=lambda a: (-int(a.get("last_event_at") or 0), str(a.get("dedup_key"))))


def _alerts_for(app: web.Application, agent: str) -> list[dict[str, Any]]:
    return [a for a in _open_alerts(app) if a.get("agent") == agent]


def _paused_agents(app: web.Application, alerts: list[dict[str, Any]]) -> set[str]:
    """Agents paused now: the board's pause state, or an open alert that paused them."""
    board = app.get(BOARD)
    paused = set(getattr(board, "paused", None) or ())
    return paused | {a["agent"] for a in alerts if a.get("action") == "paused" and a.get("agent")}


def _trust_for(app: web.Application, agent: str) -> Mapping[str, Any] | None:
    """Trust per tier: app[TRUST] (mapping or callable), else the review service's snapshot."""
    source: Any = app.get(TRUST)
    found: Any = None
    if callable(source):
        found = source(agent)
    elif isinstance(source, Mapping):
        found = source.get(agent)
    elif app.get(REVIEW) is not None and hasattr(app[REVIEW], "trust_snapshot"):
        try:
            found = app[REVIEW].trust_snapshot(agent)
        except Exception:  # noqa: BLE001 - an agent without trust evidence: show none
            found = None
    if isinstance(found, Mapping) and isinstance(found.get("tiers"), Mapping):
        found = found["tiers"]  # the shape of detectors/trust.py snapshot()
    return found if isinstance(found, Mapping) else None


def _evidence(value: Mapping[str, Any]) -> str:
    parts = []
    for key, item in value.items():
        if key in ("trust", "mean", "value"):
            continue
        if isinstance(item, Mapping):
            parts += [f"{k}={v}" for k, v in item.items() if isinstance(v, (int, float, str)) and v != ""]
        elif isinstance(item, (int, float, str)) and item != "":
            parts.append(f"{key}={item}")
    return ", ".join(parts)


def _trust_html(trust: Mapping[str, Any] | None) -> str:
    if not trust:
        return ""
    rows = []
    for tier, value in trust.items():
        if isinstance(value, Mapping):
            main, rest = value.get("trust", value.get("mean", value.get("value"))), _evidence(value)
        else:
            main, rest = value, ""
        shown = f"{main:.2f}" if isinstance(main, (int, float)) else str(main)
        rows.append(f'<tr><td>{_e(tier)}</td><td class="num">{_e(shown)}</td><td>{_e(rest)}</td></tr>')
    return ('<section class="trust"><h2>Trust</h2><table><thead><tr><th>Tier</th><th>Trust</th><th>Evidence</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _alerts_html(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<section class="alerts"><h2>Open alerts</h2><p class="none">No open alerts.</p></section>'
    rows = []
    for a in alerts:
        samples = " ".join(f'<a href="{_e(record_url(k))}">{_e(k)}</a>' for k in a.get("sample_record_keys", ())[:5])
        paused = ' <span class="badge paused">paused</span>' if a.get("action") == "paused" else ""
        rows.append(
            f'<tr class="sev-{_e(a.get("severity"))}"><td><span class="badge finding sev-{_e(a.get("severity"))}">'
            f'{_e(a.get("severity"))}</span>{paused}</td><td>{_e(a.get("kind"))}</td><td>{_e(a.get("summary"))}</td>'
            f'<td class="num">{_e(a.get("count"))}</td><td class="num">{_e(a.get("records"))}</td>'
            f'<td>{_e(iso(a.get("first_event_at")))}</td><td>{samples}</td></tr>'
        )
    return ('<section class="alerts"><h2>Open alerts</h2><table><thead><tr><th>Severity</th><th>Kind</th>'
            '<th>Summary</th><th>Changes</th><th>Records</th><th>Since</th><th>Sample records</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def _state_badge(paused: bool) -> str:
    return '<span class="badge paused">paused</span>' if paused else '<span class="badge active">active</span>'


HOME_ALERTS = 50
"""Open alerts listed on the home page (newest evidence first); each agent's page has its own."""


def _all_alerts_html(alerts: list[dict[str, Any]]) -> str:
    """Every open alert, agents' and others' (an unattributed identity has no page of its own)."""
    if not alerts:
        return '<section class="alerts"><h2>Open alerts</h2><p class="none">No open alerts.</p></section>'
    rows = []
    for a in alerts[:HOME_ALERTS]:
        agent = a.get("agent")
        who = (f'<a href="{_e(agent_url(agent))}">{_e(agent)}</a>' if agent else _e(a.get("actor_key")))
        paused = ' <span class="badge paused">paused</span>' if a.get("action") == "paused" else ""
        rows.append(
            f'<tr class="sev-{_e(a.get("severity"))}"><td><span class="badge finding sev-{_e(a.get("severity"))}">'
            f'{_e(a.get("severity"))}</span>{paused}</td><td>{_e(a.get("kind"))}</td><td>{who}</td>'
            f'<td>{_e(a.get("summary"))}</td><td>{_e(iso(a.get("last_event_at")))}</td></tr>'
        )
    more = (f'<p class="none">{len(alerts) - HOME_ALERTS} more: GET /api/alerts?status=open</p>'
            if len(alerts) > HOME_ALERTS else "")
    return ('<section class="alerts"><h2>Open alerts</h2><table><thead><tr><th>Severity</th><th>Kind</th>'
            '<th>Who</th><th>Summary</th><th>Latest evidence</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{more}</section>')


def _pause_html(agent: str, decision: Any, alerts: list[dict[str, Any]]) -> str:
    """Why the agent is paused and how it goes on: an on-call person opening the page from a
    page(r) needs both, also once the alert that paused it has been resolved."""
    reason = getattr(decision, "reason", "") or next(
        (a.get("summary", "") for a in alerts if a.get("action") == "paused"), "")
    detector = getattr(decision, "detector", "") or next(
        (a.get("kind", "") for a in alerts if a.get("action") == "paused"), "")
    since = getattr(decision, "occurred_at", None)
    by = f" by {_e(detector)}" if detector else ""
    when = f" since {_e(iso(since))}" if since else ""
    resolved = ""
    if decision is not None and getattr(decision, "dedup_key", "") and not any(
            a.get("dedup_key") == decision.dedup_key for a in alerts):
        resolved = " The alert that paused it is no longer open; the pause stays until it is resumed."
    return (f'<section class="pause"><h2>Paused</h2><p>Paused{by}{when}: {_e(reason) or "no reason recorded"}.'
            f'{resolved}</p><p class="how">The agent reads this from <code>guard.pause</code> and stops writing. '
            f'To let it go on: <code>crm-guard agents resume {_e(agent)} --reason "..."</code> or '
            f'<code>POST /api/agents/{_e(agent)}/resume</code>.</p></section>')


async def page_agent(request: web.Request) -> web.Response:
    store = _store(request)
    agent = request.match_info["agent"]
    show = _show_pii(request)
    try:
        query = _query(request)
        cursor, _, _ = _paging(request, default_newest=True)
    except web.HTTPBadRequest as exc:
        return _render("Bad request", f'<p class="error">{_e(json.loads(exc.text or "{}").get("error"))}</p>', show)
    only = _truthy(request.query.get("only_agent"))
    page = store.agent_timeline(agent, query, only_agent=only, cursor=cursor, limit=PAGE_LIMIT, show_pii=show)
    summary = next((a for a in store.agents() if a["agent"] == agent), None)
    alerts = _alerts_for(request.app, agent)
    paused = any(a.get("action") == "paused" for a in alerts)
    board = request.app.get(BOARD)
    decision = None
    if board is not None and isinstance(getattr(board, "paused", None), Mapping):
        decision = board.paused.get(agent)
        paused = paused or bool(decision)
    status = _state_badge(paused)
    stats = (f'{summary["records"]} records · {summary["changes"]} changes held · last change '
             f'{_e(iso(summary["last_at"]))}' if summary else "no changes on the timeline")
    fields = {item["field"] for item in page.items if item["field"]} | set(_multi(request, "field"))
    only_box = (f'<label><input type="checkbox" name="only_agent" value="1"{" checked" if only else ""}> '
                f'only this agent\'s changes</label>')
    plan = (
        f'<section class="plan" data-agent="{_e(agent)}"><h2>Revert plan</h2>'
        '<p>Values that undo this agent\'s changes since a time; fields a human changed afterwards are '
        'left alone. Nothing is written to the CRM.</p>'
        '<form id="plan-form"><label>Since <input id="plan-since" name="since" value="24h"></label>'
        '<label>Fields <input id="plan-fields" name="field" placeholder="all, or f1,f2"></label>'
        '<button type="submit" id="plan-preview">Preview</button></form>'
        '<div id="plan-result" aria-live="polite"></div></section>'
    )
    body = (f'<section class="head"><h1 class="agent-name">{_e(agent)} {status}</h1><p class="meta">{stats}</p>'
            f'</section>{_pause_html(agent, decision, alerts) if paused else ""}'
            f'{_alerts_html(alerts)}{_trust_html(_trust_for(request.app, agent))}{plan}'
            f'<section class="recent"><h2>Recent changes on its records</h2>'
            f'{_filters(request, fields, only_box)}{_legend()}</section>'
            f'{_lanes(page, with_record=True)}{_pager(request, page)}')
    return _render(f"agent {agent}", body, show)


def _kind_chips(kinds: Iterable[str]) -> str:
    return "".join(f'<span class="chip kind-{_e(k)}">{_e(k)}</span>' for k in kinds)


async def page_index(request: web.Request) -> web.Response:
    store = _store(request)
    show = _show_pii(request)
    records = store.recent_records(50)
    agents = store.agents()
    rec_rows = "".join(
        f'<tr><td><a href="{_e(record_url(r["record_key"]))}">{_e(r["record_key"])}</a></td>'
        f'<td>{_e(iso(r["last_at"]))}</td><td class="num">{r["changes"]}</td>'
        f'<td>{_kind_chips(r["kinds"])}</td>'
        f'<td>{", ".join(_e(a) for a in r["agents"])}</td><td class="num">{r["findings"]}</td></tr>'
        for r in records
    ) or '<tr><td colspan="6" class="none">No changes yet.</td></tr>'
    open_alerts = _open_alerts(request.app)
    paused = _paused_agents(request.app, open_alerts)
    alert_counts: dict[str, int] = {}
    for alert in open_alerts:
        if alert.get("agent"):
            alert_counts[alert["agent"]] = alert_counts.get(alert["agent"], 0) + 1
    # an agent paused or alerted before any change of it reached the timeline is listed too
    known = {a["agent"] for a in agents}
    agents = agents + [{"agent": name, "records": 0, "changes": 0, "last_at": None}
                       for name in sorted((paused | set(alert_counts)) - known)]
    agents.sort(key=lambda a: a["agent"] not in paused)  # paused first; stable: most recent change next
    agent_rows = "".join(
        f'<tr><td><a href="{_e(agent_url(a["agent"]))}">{_e(a["agent"])}</a></td>'
        f'<td>{_state_badge(a["agent"] in paused)}</td><td class="num">{alert_counts.get(a["agent"], 0)}</td>'
        f'<td class="num">{a["records"]}</td><td class="num">{a["changes"]}</td><td>{_e(iso(a["last_at"]))}</td></tr>'
        for a in agents
    ) or '<tr><td colspan="6" class="none">No agent changes yet.</td></tr>'
    body = (
        '<form class="jump" id="jump"><label>Open record <input id="jump-key" placeholder="hubspot/contact/123">'
        '</label><button type="submit">Open</button></form>'
        '<section class="agents"><h2>Agents</h2><table><thead><tr><th>Agent</th><th>State</th><th>Open alerts</th>'
        f'<th>Records</th><th>Changes</th><th>Last change</th></tr></thead><tbody>{agent_rows}</tbody></table></section>'
        f'{_all_alerts_html(open_alerts)}'
        '<section class="records"><h2>Recently changed records</h2><table><thead><tr><th>Record</th>'
        '<th>Last change</th><th>Changes</th><th>Actor kinds</th><th>Agents</th><th>Findings</th></tr></thead>'
        f'<tbody>{rec_rows}</tbody></table></section>'
    )
    return _render("timeline", body, show)
