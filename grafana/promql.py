"""Every PromQL expression of the dashboards, ready for Prometheus: extraction and Grafana macro substitution.

Used by tests/integration/test_dashboards_promql.py (promtool parses each one; a real Prometheus
scraping a guard runs each one) and handy by hand:

    python grafana/promql.py            # prints dashboard, panel, expression per line
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"

# Values for Grafana's macros and the dashboards' own variables when an expression leaves Grafana.
MACROS = {
    "__rate_interval": "2m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}
VARIABLES = {"agent": "example-agent", "datasource": "prometheus", "guard_url": "http://localhost:6066"}

_VAR = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
_METRIC = re.compile(r"\b(crm_guard_[a-z0-9_]+)\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: where it is and its expression as written in the dashboard."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str

    @property
    def promql(self) -> str:
        """The expression with Grafana macros and variables replaced (what Prometheus receives)."""
        return substitute(self.expr)


def load_dashboards(directory: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, for every dashboard under `directory`."""
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every PromQL target of every panel (targets without `expr`, such as text panels, have none)."""
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                out.append(PanelQuery(dashboard.get("uid", ""), panel.get("title", ""), target.get("refId", ""), expr))
    return out


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    """The queries of query-type template variables (e.g. `label_values(metric, agent)`)."""
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            out.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return out


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace `$__rate_interval`, `${agent}`, `$agent`, `[[agent]]` with concrete values."""
    values = {**VARIABLES, **MACROS, **(variables or {})}

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(repl, expr)


def metric_names(expr: str) -> set[str]:
    """crm_guard_* metric names an expression reads (histogram _bucket/_sum/_count folded to the base)."""
    names = set()
    for name in _METRIC.findall(expr):
        for suffix in _HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names


def recording_rules(queries: Iterable[PanelQuery | str]) -> dict[str, Any]:
    """A rules file with one recording rule per expression, for `promtool check rules` (parses each)."""
    rules = []
    for n, query in enumerate(queries):
        expr = query.promql if isinstance(query, PanelQuery) else substitute(query)
        rules.append({"record": f"crm_guard_dashboard:query_{n}", "expr": expr})
    return {"groups": [{"name": "crm-guard-dashboard-queries", "rules": rules}]}


def all_queries(directory: Path = DASHBOARDS) -> list[PanelQuery]:
    return [q for dash in load_dashboards(directory).values() for q in panel_queries(dash)]


if __name__ == "__main__":
    for q in all_queries():
        sys.stdout.write(f"{q.dashboard}\t{q.panel}\t{q.promql}\n")
