"""Dashboards as code: writes grafana/dashboards/*.json from the definitions below.

    python grafana/build.py           # regenerate the committed JSON
    python grafana/build.py --check   # exit 1 when the committed JSON is out of date (tests run this)

Plain dicts, no grafanalib/grafana-foundation-sdk: the dashboards use five panel types, a helper
per type keeps each panel to one readable line, and there is no dependency whose schema version
lags Grafana's. Metric names are those of app/metrics.py (docs/observability.md lists them).
Every panel reads the `datasource` variable, so the JSON imports into any Grafana (10 or later)
with any Prometheus data source, and provisioning (grafana/provisioning) loads it as is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
TAGS = ["crm-guard"]
RATE = "$__rate_interval"

GREEN, YELLOW, RED, BLUE = "green", "#EAB839", "red", "blue"
KIND_COLOURS = {"human": "#2563eb", "agent": "#ea580c", "automation": "#0d9488", "import": "#7c3aed",
                "integration": "#0891b2", "unknown": "#6b7280"}


# ---------------------------------------------------------------- panel helpers


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    return {"refId": ref, "expr": expr, "legendFormat": legend or "__auto", "datasource": DS,
            "range": not instant, "instant": instant}


def targets(*pairs: tuple[str, str], instant: bool = False) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + n), instant) for n, (expr, legend) in enumerate(pairs)]


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def timeseries(title: str, queries: list[dict[str, Any]], unit: str = "short", *, description: str = "",
               stack: bool = False, bars: bool = False, overrides: list[dict[str, Any]] | None = None,
               min_value: float | None = 0, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 12,
              "showPoints": "never", "spanNulls": True, "stacking": {"mode": "normal" if stack else "none",
                                                                     "group": "A"}}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if min_value is not None:
        defaults["min"] = min_value
    if links:
        defaults["links"] = links
    return {"type": "timeseries", "title": title, "description": description, "datasource": DS,
            "targets": queries, "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"],
                                   "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str = "short", *, description: str = "",
         steps: tuple[tuple[float | None, str], ...] = ((None, GREEN),),
         mappings: list[dict[str, Any]] | None = None, decimals: int | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "thresholds": thresholds(*steps), "color": {"mode": "thresholds"},
                                "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description, "datasource": DS,
            "targets": [target(expr, title)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "auto",
                        "justifyMode": "auto", "orientation": "auto"}}


def bargauge(title: str, queries: list[dict[str, Any]], unit: str = "short", *, description: str = "",
             min_value: float = 0, max_value: float | None = None,
             steps: tuple[tuple[float | None, str], ...] = ((None, GREEN),),
             links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "min": min_value, "thresholds": thresholds(*steps),
                                "color": {"mode": "thresholds"}}
    if max_value is not None:
        defaults["max"] = max_value
    if links:
        defaults["links"] = links
    return {"type": "bargauge", "title": title, "description": description, "datasource": DS,
            "targets": queries, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                        "valueMode": "color", "namePlacement": "left",
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}}


def state_timeline(title: str, queries: list[dict[str, Any]], mappings: list[dict[str, Any]], *,
                   description: str = "", steps: tuple[tuple[float | None, str], ...] = ((None, GREEN),)
                   ) -> dict[str, Any]:
    return {"type": "state-timeline", "title": title, "description": description, "datasource": DS,
            "targets": queries,
            "fieldConfig": {"defaults": {"mappings": mappings, "thresholds": thresholds(*steps),
                                         "color": {"mode": "thresholds"},
                                         "custom": {"fillOpacity": 80, "lineWidth": 0}}, "overrides": []},
            "options": {"mergeValues": True, "showValue": "never", "alignValue": "left", "rowHeight": 0.8,
                        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "single", "sort": "none"}}}


def text(title: str, markdown: str) -> dict[str, Any]:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": markdown}}


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def value_map(values: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """`{"1": ("paused", "red")}` -> a Grafana value mapping."""
    return [{"type": "value", "options": {k: {"text": t, "color": c, "index": i}
                                          for i, (k, (t, c)) in enumerate(values.items())}}]


def colour_by_name(names: dict[str, str]) -> list[dict[str, Any]]:
    """Fixed series colours (e.g. one per actor kind, matching the web UI)."""
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for name, colour in names.items()]


def dashed(regex: str) -> list[dict[str, Any]]:
    return [{"matcher": {"id": "byRegexp", "options": regex},
             "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                            {"id": "custom.fillOpacity", "value": 0},
                            {"id": "color", "value": {"mode": "fixed", "fixedColor": RED}}]}]


UP_MAP = value_map({"0": ("DOWN", RED), "1": ("UP", GREEN)})
PAUSED_MAP = value_map({"0": ("active", GREEN), "1": ("paused", RED)})
DRILL = [{"title": "Agent drill-down: ${__field.labels.agent}", "targetBlank": False,
          "url": "/d/crm-guard-agent/crm-guard-agent?var-agent=${__field.labels.agent}&${__url_time_range}"}]


# ---------------------------------------------------------------- layout and dashboard shell


def layout(items: list[tuple[dict[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Place (panel, width, height) left to right in a 24-column grid; rows start a new line."""
    out, x, y, line_height = [], 0, 0, 0
    for n, (panel, width, height) in enumerate(items, start=1):
        panel = {**panel, "id": n}
        if panel["type"] == "row":
            if x:
                y += line_height
            panel["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y, x, line_height = y + 1, 0, 0
        else:
            if x + width > 24:
                y, x, line_height = y + line_height, 0, 0
            panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
            x += width
            line_height = max(line_height, height)
        out.append(panel)
    return out


DATASOURCE_VAR = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False,
                  "multi": False}


def dashboard(uid: str, title: str, description: str, items: list[tuple[dict[str, Any], int, int]],
              variables: list[dict[str, Any]] | None = None, links: list[dict[str, Any]] | None = None,
              ) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": TAGS, "timezone": "utc",
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "timepicker": {},
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"type": "dashboards", "tags": TAGS, "asDropdown": True, "title": "crm-guard dashboards",
                   "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}] + (links or []),
        "templating": {"list": [DATASOURCE_VAR] + (variables or [])},
        "panels": layout(items),
    }


# ---------------------------------------------------------------- the dashboards


def fleet() -> dict[str, Any]:
    kinds = colour_by_name(KIND_COLOURS)
    items = [
        (row("Now"), 24, 1),
        (stat("Guard up", "min(crm_guard_up)", mappings=UP_MAP, steps=((None, RED), (1, GREEN)),
              description="0 or no data: a worker is down (see the CrmGuardDown alert)."), 4, 4),
        (stat("Events in /s", f'sum(rate(crm_guard_events_total{{outcome="ok"}}[{RATE}]))', "cps", decimals=1), 4, 4),
        (stat("Agents paused", "sum(crm_guard_agent_paused) or vector(0)", steps=((None, GREEN), (1, RED))), 4, 4),
        (stat("Alerts (24h)", "sum(increase(crm_guard_alerts_total[24h])) or vector(0)", decimals=0,
              steps=((None, GREEN), (1, YELLOW))), 4, 4),
        (stat("Overrides (24h)", "sum(increase(crm_guard_overrides_total[24h])) or vector(0)", decimals=0,
              steps=((None, GREEN), (1, YELLOW)),
              description="Humans setting back a field an agent changed."), 4, 4),
        (stat("Review backlog", "sum(max by (agent) (crm_guard_review_backlog)) or vector(0)", steps=((None, GREEN), (20, YELLOW))), 4, 4),

        (row("Who changes the CRM"), 24, 1),
        (timeseries("Changes by actor kind", targets(
            (f"sum by (actor_kind) (rate(crm_guard_changes_total[{RATE}]))", "{{actor_kind}}")), "cps", stack=True,
            overrides=kinds, description="Attributed changes per second; colours match the timeline pages."), 12, 8),
        (timeseries("Changes by agent", targets(
            (f"sum by (agent) (rate(crm_guard_agent_changes_total[{RATE}]))", "{{agent}}")), "cps",
            links=DRILL), 12, 8),

        (row("Velocity against caps"), 24, 1),
        (bargauge("Share of velocity cap in use", targets(
            ("max by (agent, cap) (crm_guard_agent_velocity_records)"
             " / max by (agent, cap) (crm_guard_agent_velocity_cap)", "{{agent}} {{cap}}"), instant=True),
            "percentunit", max_value=1.2, steps=((None, GREEN), (0.8, YELLOW), (1, RED)), links=DRILL,
            description="Distinct records in the rolling window / the cap. Over 100 %: the cap was breached."),
         10, 9),
        (timeseries("Distinct records in window vs cap", targets(
            ("max by (agent, cap) (crm_guard_agent_velocity_records)", "{{agent}} {{cap}}"),
            ("max by (agent, cap) (crm_guard_agent_velocity_cap)", "cap {{agent}} {{cap}}")),
            overrides=dashed("^cap .*"), description="Dashed red: the cap."), 14, 9),

        (row("Findings, alerts and pauses"), 24, 1),
        (timeseries("Findings per minute by detector", targets(
            (f"60 * sum by (detector) (rate(crm_guard_findings_total[{RATE}]))", "{{detector}}")), stack=True), 8, 8),
        (timeseries("Alerts per minute by detector and severity", targets(
            (f"60 * sum by (detector, severity) (rate(crm_guard_alerts_total[{RATE}]))",
             "{{detector}} {{severity}}")), stack=True), 8, 8),
        (bargauge("Findings in range by detector", targets(
            ("sum by (detector) (increase(crm_guard_findings_total[$__range]))", "{{detector}}"), instant=True),
            steps=((None, BLUE),)), 8, 8),
        (state_timeline("Paused agents", targets(("max by (agent) (crm_guard_agent_paused)", "{{agent}}")),
                        PAUSED_MAP, steps=((None, GREEN), (1, RED))), 16, 7),
        (timeseries("Pause signals", targets(
            (f"sum by (agent) (increase(crm_guard_pauses_total[{RATE}]))", "{{agent}}")), bars=True), 8, 7),

        (row("Overrides and trust"), 24, 1),
        (timeseries("Overrides per hour by agent", targets(
            (f"3600 * sum by (agent) (rate(crm_guard_overrides_total[{RATE}]))", "{{agent}}")), links=DRILL), 8, 8),
        (bargauge("Override rate (24h): overrides per agent change", targets(
            ("sum by (agent) (increase(crm_guard_overrides_total[24h]))"
             " / sum by (agent) (increase(crm_guard_agent_changes_total[24h]))", "{{agent}}"), instant=True),
            "percentunit", max_value=0.5, steps=((None, GREEN), (0.05, YELLOW), (0.15, RED))), 8, 8),
        (bargauge("Trust by agent and field tier", targets(
            ("max by (agent, tier) (crm_guard_agent_trust)", "{{agent}} {{tier}}"), instant=True),
            "percentunit", max_value=1, steps=((None, RED), (0.5, YELLOW), (0.8, GREEN)), links=DRILL,
            description="Below 0.5 escalate, 0.5-0.8 propose, 0.8 and above may act (see the trust docs)."), 8, 8),
    ]
    return dashboard("crm-guard-fleet", "crm-guard / Fleet overview",
                     "Who changes the CRM, agents against their caps, findings, alerts, pauses, overrides and trust.",
                     items)


def agent() -> dict[str, Any]:
    a = 'agent="$agent"'
    variables = [
        {"name": "agent", "label": "Agent", "type": "query", "datasource": DS,
         "query": {"query": "label_values(crm_guard_agent_changes_total, agent)", "refId": "agents"},
         "definition": "label_values(crm_guard_agent_changes_total, agent)", "refresh": 2, "sort": 1,
         "includeAll": False, "multi": False, "current": {}, "options": [], "hide": 0, "regex": ""},
        {"name": "guard_url", "label": "crm-guard URL", "type": "textbox", "query": "http://localhost:6066",
         "current": {"text": "http://localhost:6066", "value": "http://localhost:6066"}, "hide": 0,
         "options": [{"selected": True, "text": "http://localhost:6066", "value": "http://localhost:6066"}]},
    ]
    links = [{"type": "link", "title": "Agent page in crm-guard", "url": "${guard_url}/agents/${agent}",
              "targetBlank": True, "icon": "external link", "asDropdown": False, "includeVars": False,
              "keepTime": False, "tags": [], "tooltip": "Timeline, open alerts, revert plan"}]
    items = [
        (row("$agent now"), 24, 1),
        (stat("State", f"max(crm_guard_agent_paused{{{a}}}) or vector(0)", mappings=PAUSED_MAP,
              steps=((None, GREEN), (1, RED))), 4, 4),
        (stat("Changes per minute", f"60 * sum(rate(crm_guard_agent_changes_total{{{a}}}[{RATE}])) or vector(0)",
              decimals=1), 4, 4),
        (stat("Highest share of a cap", f"max(crm_guard_agent_velocity_records{{{a}}} / crm_guard_agent_velocity_cap{{{a}}})",
              "percentunit", steps=((None, GREEN), (0.8, YELLOW), (1, RED))), 4, 4),
        (stat("Overrides (24h)", f"sum(increase(crm_guard_overrides_total{{{a}}}[24h])) or vector(0)", decimals=0,
              steps=((None, GREEN), (1, YELLOW))), 4, 4),
        (stat("Pauses (7d)", f"sum(increase(crm_guard_pauses_total{{{a}}}[7d])) or vector(0)", decimals=0,
              steps=((None, GREEN), (1, RED))), 4, 4),
        (stat("Review backlog", f"sum(max by (agent) (crm_guard_review_backlog{{{a}}})) or vector(0)",
              steps=((None, GREEN), (20, YELLOW))), 4, 4),

        (row("Activity"), 24, 1),
        (timeseries("Distinct records in window vs each cap", targets(
            (f"max by (cap) (crm_guard_agent_velocity_records{{{a}}})", "{{cap}}"),
            (f"max by (cap) (crm_guard_agent_velocity_cap{{{a}}})", "cap {{cap}}")), overrides=dashed("^cap .*"),
            description="Dashed red: the cap. The change that crosses it pauses the agent when the policy says so."),
         12, 8),
        (timeseries("Changes per minute", targets(
            (f"60 * sum(rate(crm_guard_agent_changes_total{{{a}}}[{RATE}]))", "changes")),
            links=[{"title": "Timeline of $agent", "url": "${guard_url}/agents/${agent}", "targetBlank": True}]),
         12, 8),
        (state_timeline("Paused", targets((f"max(crm_guard_agent_paused{{{a}}})", "$agent")), PAUSED_MAP,
                        steps=((None, GREEN), (1, RED))), 24, 4),

        (row("Corrections and trust"), 24, 1),
        (timeseries("Override rate (overrides per change, 1h window)", targets(
            (f"sum(rate(crm_guard_overrides_total{{{a}}}[1h])) / sum(rate(crm_guard_agent_changes_total{{{a}}}[1h]))",
             "override rate")), "percentunit"), 8, 8),
        (timeseries("Trust by field tier", targets(
            (f"max by (tier) (crm_guard_agent_trust{{{a}}})", "{{tier}}")), "percentunit"), 8, 8),
        (timeseries("Review backlog", targets((f"sum(max by (agent) (crm_guard_review_backlog{{{a}}}))", "pending proposals"))), 8, 8),
        (text("Where to look next",
              "Open **[the agent page](${guard_url}/agents/${agent})** for its recent changes on each record "
              "(human and agent lanes), open alerts and a revert plan preview, or run "
              "`crm-guard revert-plan --agent ${agent} --since 24h --out plan/`."), 24, 3),
    ]
    return dashboard("crm-guard-agent", "crm-guard / Agent", "One agent: velocity against caps, pauses, "
                     "overrides, trust and review backlog.", items, variables, links)


def pipeline() -> dict[str, Any]:
    items = [
        (row("Health"), 24, 1),
        (stat("Workers up", "sum(crm_guard_up) or vector(0)", steps=((None, RED), (1, GREEN)), decimals=0), 4, 4),
        (stat("Events in /s", f"sum(rate(crm_guard_events_total[{RATE}]))", "cps", decimals=1), 4, 4),
        (stat("Consumer lag (max topic)", "max(sum by (topic) (crm_guard_consumer_lag)) or vector(0)",
              steps=((None, GREEN), (1000, YELLOW), (100000, RED))), 4, 4),
        (stat("Dead letters (1h)", "sum(increase(crm_guard_deadletters_total[1h])) or vector(0)", decimals=0,
              steps=((None, GREEN), (1, YELLOW), (100, RED))), 4, 4),
        (stat("Alert latency p99", "histogram_quantile(0.99, sum by (le) "
              f"(rate(crm_guard_alert_latency_seconds_bucket[{RATE}])))", "s", decimals=2,
              steps=((None, GREEN), (1, YELLOW), (60, RED))), 4, 4),
        (stat("Failed alert deliveries (1h)",
              # outcome `failed`: the delivery gave up (retries exhausted or a 4xx); `sent` is success
              'sum(increase(crm_guard_alert_deliveries_total{outcome="failed"}[1h])) or vector(0)', decimals=0,
              steps=((None, GREEN), (1, RED))), 4, 4),

        (row("Throughput"), 24, 1),
        (timeseries("Events by source and outcome", targets(
            (f"sum by (source, outcome) (rate(crm_guard_events_total[{RATE}]))", "{{source}} {{outcome}}")),
            "cps", stack=True), 12, 8),
        (timeseries("Events per worker", targets(
            (f"sum by (instance) (rate(crm_guard_events_total[{RATE}]))", "{{instance}}")), "cps"), 12, 8),
        (timeseries("Consumer lag by topic", targets(
            ("sum by (topic) (crm_guard_consumer_lag)", "{{topic}}")),
            description="Messages behind the end of each input topic, summed over partitions and workers."), 12, 8),
        (timeseries("Redeliveries (duplicates) by source", targets(
            (f'sum by (source) (rate(crm_guard_events_total{{outcome="duplicate"}}[{RATE}]))', "{{source}}")),
            "cps"), 12, 8),

        (row("Latency"), 24, 1),
        (timeseries("Batch processing time", targets(
            (f"histogram_quantile(0.5, sum by (le) (rate(crm_guard_processed_batch_seconds_bucket[{RATE}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(crm_guard_processed_batch_seconds_bucket[{RATE}])))", "p99"),
            (f"sum(rate(crm_guard_processed_batch_seconds_sum[{RATE}]))"
             f" / sum(rate(crm_guard_processed_batch_seconds_count[{RATE}]))", "mean")), "s"), 12, 8),
        (timeseries("Alert latency: event time to alert", targets(
            (f"histogram_quantile(0.5, sum by (le) (rate(crm_guard_alert_latency_seconds_bucket[{RATE}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(crm_guard_alert_latency_seconds_bucket[{RATE}])))", "p99")),
            "s", description="Includes the vendors' webhook delay: event time is when the CRM change happened."),
         12, 8),

        (row("Dead letters, deliveries, state, refused API changes"), 24, 1),
        (timeseries("Dead letters by source and reason", targets(
            (f"sum by (source, reason) (increase(crm_guard_deadletters_total[{RATE}]))", "{{source}} {{reason}}")),
            bars=True, stack=True), 6, 8),
        (timeseries("Alert deliveries by sink and outcome", targets(
            (f"sum by (sink, outcome) (rate(crm_guard_alert_deliveries_total[{RATE}]))", "{{sink}} {{outcome}}")),
            "cps", stack=True), 6, 8),
        (timeseries("State entries by store", targets(("sum by (store) (crm_guard_state_entries)", "{{store}}"))),
         4, 8),
        (timeseries("State entries dropped past retention", targets(
            ("sum by (stage) (increase(crm_guard_state_compacted_total[1d]))", "{{stage}}")),
            bars=True, stack=True,
            description="Per day: records, identities, accounts and actor entries idle beyond their retention "
                        "(docs/detectors.md), dropped once a day of event time per partition. None for weeks "
                        "while state grows: check the retention settings."),
         4, 8),
        (timeseries("Refused API changes (operator token)", targets(
            (f"sum by (reason) (increase(crm_guard_api_refused_total[{RATE}]))", "{{reason}}")),
            bars=True, stack=True,
            description="Review decisions, pins or resumes sent without the right api_token. The worker log "
                        "names the path and the caller: an agent's address means it tried to act for itself."),
         4, 8),

        (row("Salesforce subscriber (crm-guard salesforce subscribe --metrics-port)"), 24, 1),
        (stat("Salesforce session", "min(crm_guard_salesforce_connected)",
              steps=((None, RED), (1, GREEN)), decimals=0,
              mappings=value_map({"0": ("reconnecting", RED), "1": ("connected", GREEN)}),
              description="Empty: no subscriber is scraped (Salesforce CDC then reaches the guard only "
                          "through a bridge of your own, if any)."), 6, 8),
        (timeseries("Salesforce events by channel", targets(
            (f"sum by (channel) (rate(crm_guard_salesforce_events_total[{RATE}]))", "{{channel}}")), "cps"), 6, 8),
        (timeseries("Since the last Salesforce event", targets(
            ("time() - max by (channel) (crm_guard_salesforce_last_event_timestamp_seconds)", "{{channel}}")),
            "s", description="A quiet org is normal at night; hours during a working day are not."), 6, 8),
        (timeseries("Salesforce sessions started, by why", targets(
            ("sum by (reason) (increase(crm_guard_salesforce_handshakes_total[1h]))", "{{reason}}"),
            ("sum(increase(crm_guard_salesforce_replay_gaps_total[1h]))", "expired resume points")),
            bars=True, stack=True,
            description="session_ended: Salesforce dropped the session (403::Unknown client); expired resume "
                        "points: changes lost at Salesforce (alert CrmGuardSalesforceEventsLost)."), 6, 8),
    ]
    return dashboard("crm-guard-pipeline", "crm-guard / Pipeline health",
                     "Is the guard keeping up: workers, throughput, lag, latency, dead letters, deliveries, state.",
                     items)


DASHBOARDS = {"crm-guard-fleet.json": fleet, "crm-guard-agent.json": agent, "crm-guard-pipeline.json": pipeline}


def render() -> dict[str, str]:
    """File name -> JSON text (stable: sorted keys, two-space indent, trailing newline)."""
    return {name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, t in files.items() if not (OUT / n).is_file() or (OUT / n).read_text() != t]
        if stale:
            print(f"out of date: {', '.join(stale)}; run python grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (OUT / name).write_text(content)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
