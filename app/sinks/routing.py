"""Which alerts go to which sink: the `routing:` section of the policy (or settings) file.

    routing:
      rules:
        - {sinks: [slack, webhook], min_severity: warning}
        - {sinks: [pagerduty], min_severity: critical}
        - {sinks: [pagerduty], min_severity: warning, agents: [billing-bot]}   # page on any billing-bot alert
        - {sinks: [slack], min_severity: info, kinds: [override_rate]}

An alert goes to the union of the sinks of every rule it matches: severity at or above
`min_severity`, kind in `kinds` (when given), agent in `agents` (when given). Without a `routing:`
section the defaults above apply (the first two rules). A sink named in a rule but not configured
(no URL or key) is skipped.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.alerts import Alert
from detectors.base import Severity

SinkName = Literal["slack", "pagerduty", "webhook"]


class RoutingRule(BaseModel):
    """One rule; empty `kinds`/`agents` mean any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sinks: list[SinkName] = Field(min_length=1)
    min_severity: Severity = Severity.WARNING
    kinds: list[str] | None = None
    agents: list[str] | None = None

    def matches(self, alert: Alert) -> bool:
        if Severity(alert.severity).rank < self.min_severity.rank:
            return False
        if self.kinds and alert.kind not in self.kinds:
            return False
        if self.agents and (alert.agent or "") not in self.agents:
            return False
        return True


def _default_rules() -> list[RoutingRule]:
    return [
        RoutingRule(sinks=["slack", "webhook"], min_severity=Severity.WARNING),
        RoutingRule(sinks=["pagerduty"], min_severity=Severity.CRITICAL),
    ]


class RoutingConfig(BaseModel):
    """The routing section: a list of rules, matched all (union of sinks)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[RoutingRule] = Field(default_factory=_default_rules)

    def sinks_for(self, alert: Alert) -> list[str]:
        """Sink names for this alert, in a stable order."""
        out: list[str] = []
        for rule in self.rules:
            if rule.matches(alert):
                for sink in rule.sinks:
                    if sink not in out:
                        out.append(sink)
        return out
