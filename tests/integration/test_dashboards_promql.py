"""Every dashboard panel's PromQL: parsed by promtool, and run by a real Prometheus scraping a running guard.

* `test_every_panel_expression_parses_with_promtool` needs only promtool.
* The `live` fixture starts the guard (runtime, web server, local alert sinks) in-process on the
  test broker, feeds it a small incident through the raw topics (helpers_incident.py: a velocity
  burst and a pause, an override, a protected field, duplicates, dead letters, deliveries that
  succeed and fail, a proposal waiting for review), and starts Debian's Prometheus scraping the
  guard's /metrics every second. Then every panel expression of every dashboard in
  grafana/dashboards/ (grafana/promql.py's extractor, `$agent` = the policy's agent) must succeed
  and return series, every label value a panel matches on must be one the guard exports, and the
  agent variable must list the agent.

Both tools come from Debian's `prometheus` package (`make install-test-tools`); without them these
tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from grafana.promql import (  # noqa: E402
    PanelQuery,
    all_queries,
    load_dashboards,
    metric_names,
    recording_rules,
    substitute,
    variable_queries,
)
from tests.integration.helpers_incident import (  # noqa: E402
    AGENT,
    RunningGuard,
    feed_incident,
    incident_guard,
    wait_for_incident,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DOC = ROOT / "docs" / "observability.md"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "crm-guard.rules.yml"
GRAFANA_VALUES = {"agent": AGENT, "__rate_interval": "1m", "__interval": "1m"}

KNOWN_GAPS: dict[str, str] = {}
"""Metrics a running guard does not export yet, and why (see test_every_panel_query_returns_series)."""

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")]


def need(tool: str) -> str:
    if not Path(tool).exists():
        pytest.fail(f"{tool} is missing: install Debian's prometheus package (make install-test-tools)")
    return tool


def documented_metrics() -> set[str]:
    """Metric names in the reference table of docs/observability.md (first column, `crm_guard_*`)."""
    names = set()
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\|\s*`(crm_guard_[a-z0-9_]+)`", line)
        if match:
            names.add(match.group(1))
    return names


def promtool_check(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return subprocess.run([need(PROMTOOL), "check", "rules", str(path)],  # noqa: S603 - Debian's promtool
                          capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- parse


def test_every_panel_expression_parses_with_promtool(tmp_path: Path) -> None:
    queries = all_queries()
    per_dashboard = {q.dashboard for q in queries}
    assert per_dashboard == {"crm-guard-fleet", "crm-guard-agent", "crm-guard-pipeline"}
    assert len(queries) >= 40
    result = promtool_check(recording_rules(queries), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    expr = "sum by (agent (rate(crm_guard_agent_changes_total[$__rate_interval]))"
    broken = PanelQuery("x", "broken", "A", expr)
    result = promtool_check(recording_rules([broken]), tmp_path)
    assert result.returncode != 0


def test_grafana_variables_are_substituted_and_unknown_ones_are_errors() -> None:
    assert substitute('rate(x{agent="$agent"}[$__rate_interval])') == 'rate(x{agent="example-agent"}[2m])'
    assert substitute("increase(x[${__range}])", {"__range": "6h"}) == "increase(x[6h])"
    with pytest.raises(KeyError):
        substitute("x{a=\"$nope\"}")
    assert metric_names("histogram_quantile(0.9, rate(crm_guard_alert_latency_seconds_bucket[5m]))") == {
        "crm_guard_alert_latency_seconds"}


def test_every_metric_in_dashboards_and_rules_is_in_the_documented_reference() -> None:
    documented = documented_metrics()
    assert len(documented) >= 19
    used: set[str] = set()
    for query in all_queries():
        used |= metric_names(query.expr)
    for dash in load_dashboards().values():
        for query in variable_queries(dash):
            used |= metric_names(query)
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    assert used - documented == set(), f"used but not documented: {sorted(used - documented)}"
    unused = documented - used
    assert unused == set(), f"documented metrics no panel shows: {sorted(unused)}"


# ---------------------------------------------------------------- a real Prometheus


class Prometheus:
    """Debian's Prometheus scraping `targets` every second, on a free port, in a temp directory."""

    def __init__(self, targets: list[str], workdir: Path) -> None:
        from app.broker.embedded import free_port

        self.port = free_port()
        self.workdir = workdir
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "crm-guard", "static_configs": [{"targets": targets}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - Debian's prometheus
                [need(PROMETHEUS), f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=log,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        url = f"{self.url}{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - local Prometheus
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self._get("/api/v1/query", [("query", expr)])

    def label_values(self, label: str, match: str) -> list[str]:
        res = self._get(f"/api/v1/label/{label}/values", [("match[]", match)])
        assert res.get("status") == "success", res
        return list(res["data"])

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError("prometheus did not become ready")

    def scrapes(self) -> int:
        """Samples of crm_guard_up stored in the last 10 minutes (0 before the first good scrape)."""
        res = self.query('count_over_time(crm_guard_up{job="crm-guard"}[10m])')
        if res.get("status") == "success" and res["data"]["result"]:
            return int(float(res["data"]["result"][0]["value"][1]))
        return 0

    def wait_for_scrapes(self, n: int, timeout: float = 30) -> None:
        """Until `n` more scrapes than now are stored (rates need two samples of each series)."""
        start = self.scrapes()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scrapes() >= start + n:
                up = self.query('up{job="crm-guard"}')["data"]["result"]
                assert up and up[0]["value"][1] == "1", f"target down: {up}"
                return
            time.sleep(0.25)
        log = self.log.read_text()[-1500:]
        raise TimeoutError(f"prometheus did not scrape the guard {n} times; log: {log}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class GuardThread:
    """The incident guard (helpers_incident) on its own event loop in a thread, so it keeps serving
    /metrics between tests and while the tests block on Prometheus."""

    def __init__(self, bootstrap: str, kind: str, web_port: int, subscriber_port: int) -> None:
        self.bootstrap, self.kind, self.web_port = bootstrap, kind, web_port
        self.subscriber_port = subscriber_port
        self.ready = threading.Event()
        self.guard: RunningGuard | None = None
        self.missing: list[str] = []
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="incident-guard",
                                        daemon=True)

    async def _main(self) -> None:
        try:
            async with incident_guard(self.bootstrap, self.kind, self.web_port) as guard:
                await feed_incident(guard)
                self.missing = await wait_for_incident(guard)
                self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
                async with salesforce_subscriber(guard, self.kind, self.subscriber_port):
                    self.guard = guard
                    self.ready.set()
                    await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc
        finally:
            self.ready.set()

    def start(self, timeout: float = 120) -> RunningGuard:
        self._thread.start()
        if not self.ready.wait(timeout):
            raise TimeoutError("the guard did not start and process the incident")
        if self.error is not None or self.guard is None:
            raise RuntimeError("the guard failed") from self.error
        return self.guard

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the guard did not stop"


@contextlib.asynccontextmanager
async def salesforce_subscriber(guard: RunningGuard, kind: str, port: int) -> AsyncIterator[None]:
    """`crm-guard salesforce subscribe`'s parts (a local CometD server standing in for Salesforce)
    feeding the guard's raw topic, its metrics served on `port`: its panels and rules get series."""
    from prometheus_client import start_http_server

    from app.runtime.kafka_client import make_producer
    from app.salesforce_cdc.client import CometdTransport, TokenSource
    from app.salesforce_cdc.metrics import SubscriberMetrics
    from app.salesforce_cdc.subscriber import SalesforceSubscriber
    from tests.integration.fake_salesforce import FakeSalesforce
    from tests.integration.test_salesforce_subscribe import CHANNEL, account_update

    salesforce = FakeSalesforce(hold_s=0.2)
    url = await salesforce.start()
    for i in range(3):
        salesforce.publish(CHANNEL, account_update(i))
    metrics = SubscriberMetrics()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    producer = make_producer(guard.settings, idempotent=kind == "apache")
    await producer.start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            subscriber = SalesforceSubscriber(
                CometdTransport(http, TokenSource(url, access_token=salesforce.token), "62.0"), producer,
                guard.settings.topics.raw_salesforce, [CHANNEL], {}, replay_from=-2, metrics=metrics)
            task = asyncio.ensure_future(subscriber.run())
            while subscriber.stats.produced < 3 and not task.done():
                await asyncio.sleep(0.05)
            yield
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await producer.stop()
        await salesforce.stop()
        server.shutdown()


@dataclass
class Live:
    guard: RunningGuard
    prometheus: Prometheus
    missing: list[str]


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A guard that went through the incident, and a Prometheus that scraped it after it did."""
    from app.broker.embedded import free_port

    need(PROMETHEUS)
    web_port, subscriber_port = free_port(), free_port()
    prometheus = Prometheus([f"127.0.0.1:{web_port}", f"127.0.0.1:{subscriber_port}"],
                            tmp_path_factory.mktemp("prometheus"))
    runner = GuardThread(kafka_bootstrap, os.environ.get("CRM_GUARD_TEST_BROKER_KIND", "tansu"), web_port,
                         subscriber_port)
    try:
        guard = runner.start()
        prometheus.wait_ready()
        prometheus.wait_for_scrapes(3)
        yield Live(guard, prometheus, runner.missing)
    finally:
        prometheus.stop()
        runner.stop()


def series(live: Live, expr: str) -> list[dict[str, Any]]:
    res = live.prometheus.query(expr)
    assert res.get("status") == "success", f"{res.get('error')} :: {expr}"
    return list(res["data"]["result"])


def exported_names(live: Live) -> set[str]:
    rows = series(live, 'count by (__name__) ({job="crm-guard", __name__=~"crm_guard_.*"})')
    return metric_names(" ".join(r["metric"]["__name__"] for r in rows))


@pytest.mark.kafka
def test_the_incident_reached_every_metric(live: Live) -> None:
    assert live.missing == [], f"the guard's metrics never showed: {live.missing}"
    documented = documented_metrics()
    exported = exported_names(live)
    fixed = exported & set(KNOWN_GAPS)
    assert fixed == set(), f"the guard exports {sorted(fixed)} now: remove it from KNOWN_GAPS"
    missing = documented - exported
    assert missing == set(KNOWN_GAPS), f"documented, not exported: {sorted(missing)}"


@pytest.mark.kafka
def test_every_panel_query_returns_series_from_a_running_guard(live: Live) -> None:
    problems = []
    ran = 0
    for q in all_queries():
        expr = substitute(q.expr, GRAFANA_VALUES)
        res = live.prometheus.query(expr)
        ran += 1
        if res.get("status") != "success":
            problems.append(f"{q.dashboard} / {q.panel} [{q.ref_id}]: {res.get('error')} :: {expr}")
        elif not res["data"]["result"] and not metric_names(q.expr) & set(KNOWN_GAPS):
            problems.append(f"{q.dashboard} / {q.panel} [{q.ref_id}]: no series :: {expr}")
    assert ran >= 40
    assert problems == [], "\n".join(problems)


_SELECTOR = re.compile(r"\b(crm_guard_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def panel_matchers() -> list[tuple[PanelQuery, str, str, str, str]]:
    """(query, metric, label, op, value) for every label matcher of every panel expression."""
    out = []
    for q in all_queries():
        for metric, body in _SELECTOR.findall(substitute(q.expr, GRAFANA_VALUES)):
            for label, op, value in _MATCHER.findall(body):
                out.append((q, metric, label, op, value))
    return out


@pytest.mark.kafka
def test_every_label_value_a_panel_matches_on_is_one_the_guard_exports(live: Live) -> None:
    """`outcome!="ok"` on a metric whose outcomes are `sent`/`failed` runs fine and means nothing:
    equality and inequality matchers must name values the guard really exports."""
    matchers = panel_matchers()
    assert ("crm_guard_events_total", "outcome") in {(m[1], m[2]) for m in matchers}
    values: dict[tuple[str, str], set[str]] = {}
    problems = []
    for q, metric, label, op, value in matchers:
        if metric_names(metric) & set(KNOWN_GAPS) or op not in ("=", "!=", "=~"):
            continue
        key = (metric, label)
        if key not in values:
            values[key] = {r["metric"].get(label, "") for r in series(live, f"count by ({label}) ({metric})")}
        wanted = value.split("|") if op == "=~" else [value]
        for v in wanted:
            if re.fullmatch(r"[\w.-]+", v) and v not in values[key]:
                problems.append(f"{q.dashboard} / {q.panel}: {metric}{{{label}{op}\"{value}\"}} but the "
                                f"guard exports {label} in {sorted(values[key])}")
    assert problems == [], "\n".join(problems)


@pytest.mark.kafka
def test_the_agent_variable_lists_the_agent_and_the_stats_show_the_incident(live: Live) -> None:
    agent_dash = load_dashboards()["crm-guard-agent.json"]
    (variable,) = variable_queries(agent_dash)
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable)
    assert match, variable
    assert AGENT in live.prometheus.label_values(match.group(2), match.group(1))

    def stat(dashboard: str, panel: str) -> float:
        """The value of the dashboard's first panel of that title (the stat, before a same-named graph)."""
        q = next(q for q in all_queries() if q.dashboard == dashboard and q.panel == panel)
        (row,) = series(live, substitute(q.expr, GRAFANA_VALUES))
        return float(row["value"][1])

    assert stat("crm-guard-fleet", "Guard up") == 1
    assert stat("crm-guard-pipeline", "Workers up") == 1
    assert stat("crm-guard-fleet", "Agents paused") == 1
    assert stat("crm-guard-agent", "State") == 1  # paused
    assert stat("crm-guard-agent", "Review backlog") >= 1
    assert stat("crm-guard-fleet", "Review backlog") >= 1
    assert live.guard.sinks.received["pagerduty"] >= 1 and live.guard.sinks.received["slack"] >= 1
