"""`promtool check metrics` passes on a running guard's /metrics (issue 4).

The guard runs in-process on the test broker and goes through the small incident of
helpers_incident.py first, so every metric family has labelled series (a family without children
prints only HELP and TYPE, and promtool would check little). promtool lints names (counters end in
`_total`, no `_count`/`_sum`/`_bucket` suffix outside histograms, base units) and HELP text.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers_incident import feed_incident, incident_guard, wait_for_incident

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore:It is recommended to use web.AppKey")]


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail(f"{PROMTOOL} is missing: install Debian's prometheus package (make install-test-tools)")
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text,  # noqa: S603 - Debian's promtool
                          capture_output=True, text=True, timeout=60)


def test_promtool_finds_a_badly_named_metric() -> None:
    """The check can fail: a counter without `_total` and a gauge named like a histogram part."""
    bad = ("# HELP crm_guard_things Things.\n# TYPE crm_guard_things counter\ncrm_guard_things 1\n"
           "# HELP crm_guard_size_count x\n# TYPE crm_guard_size_count gauge\ncrm_guard_size_count 1\n")
    result = promtool_check_metrics(bad)
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr


async def test_promtool_check_metrics_passes_on_a_running_guards_output(
    kafka_bootstrap: str, kafka_kind: str
) -> None:
    async with incident_guard(kafka_bootstrap, kafka_kind) as guard:
        await feed_incident(guard)
        missing = await wait_for_incident(guard)
        assert missing == [], f"the guard's metrics never showed: {missing}"
        text = await guard.metrics_text()
    families = list(text_string_to_metric_families(text))
    with_series = {f.name for f in families if f.samples}
    assert len(with_series) >= 20, sorted(with_series)
    result = promtool_check_metrics(text)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result.stdout + result.stderr
