"""policy suggest: candidate agents for the identities a backtest could not attribute."""

from __future__ import annotations

from typing import Any

import pytest

from app.census import TOP_FIELDS
from app.policy_file import parse_policy
from app.policy_suggest import suggest_policy
from detectors.attribution import Attributor
from detectors.events import ActorKind
from detectors.policy import AgentPolicy, Policy
from tests.unit.helpers_events import event

T0 = 1_741_000_000_000


def row(kind: str = "unknown", *, change_source: str | None = "INTEGRATION", user_id: str | None = None,
        app_id: str | None = "1850301", fields: dict[str, int] | None = None, **kw: Any) -> dict[str, Any]:
    fields = {"jobtitle": 40, "utm_source": 3} if fields is None else fields
    identity = {"vendor": "hubspot", "change_source": change_source, "user_id": user_id, "app_id": app_id}
    parts = [f"{k}={v}" for k, v in identity.items() if v and k != "vendor"]
    describe = " ".join(["hubspot", *parts])
    base = {"identity": identity, "describe": describe, "kind": kind, "actor": app_id, "events": 43,
            "changes": 43, "records": 40, "records_capped": False, "busiest_hour_records": 12,
            "overwrites": 9,
            "blanked": 0, "bulk_events": 0, "operations": {"update": 43}, "object_types": {"contact": 43},
            "fields": fields, "fields_total": len(fields), "first_at": T0, "last_at": T0 + 86_400_000}
    return base | kw


def test_an_unknown_integration_becomes_an_agent_with_the_scope_it_showed() -> None:
    text = suggest_policy([row(), row("human", change_source="CRM_UI", user_id="7", app_id=None)])
    policy = parse_policy(text)
    assert list(policy.agents) == ["hubspot-app-1850301"]  # the human is attributed already: left alone
    agent = policy.agents["hubspot-app-1850301"]
    assert agent.allowed_fields == ["jobtitle"]  # utm_source is high tier: named in a comment, not allowed
    assert "wrote high-tier fields, not allowed below: utm_source" in text
    assert agent.allowed_object_types == ["contact"] and not agent.high_tier_allowed
    assert agent.velocity_caps[0].max_records == 24 and agent.velocity_caps[0].window == 3_600_000
    assert {t.value: a.value for t, a in agent.autonomy.items()} == {"low": "act", "medium": "propose",
                                                                     "high": "observe"}


def test_the_suggested_rule_attributes_that_identity_to_the_agent() -> None:
    policy = parse_policy(suggest_policy([row(change_source="INTEGRATION", app_id="1850301")]))
    change = event(1, {"jobtitle": "CTO"}, by="x", kind=ActorKind.UNKNOWN)
    identity = change.actor.identity.model_copy(update={"change_source": "INTEGRATION", "app_id": "1850301",
                                                        "user_id": None})
    attributed = Attributor(policy).attribute(change.model_copy(update={"actor": change.actor.model_copy(
        update={"identity": identity})}))
    assert (attributed.actor.kind, attributed.actor.id) == (ActorKind.AGENT, "hubspot-app-1850301")


def test_names_never_clash_and_a_long_field_list_is_left_to_a_person() -> None:
    taken = Policy(agents={"hubspot-app-1850301": AgentPolicy()})
    many = {f"field_{i}": 1 for i in range(TOP_FIELDS)}
    text = suggest_policy([row(fields=many, fields_total=TOP_FIELDS + 5),
                           row(app_id=None, user_id="u/1@x", change_source="API")], taken)
    policy = parse_policy(text)
    assert list(policy.agents) == ["hubspot-app-1850301-2", "hubspot-user-u-1-x"]
    assert policy.agents["hubspot-app-1850301-2"].allowed_fields is None  # no list: no field restriction
    assert f"wrote {TOP_FIELDS + 5} fields: no allowed_fields list" in text


@pytest.mark.parametrize("rows", [[], [row("agent")]])
def test_nothing_to_suggest_loads_as_an_empty_policy(rows: list[dict[str, Any]]) -> None:
    text = suggest_policy(rows)
    assert text.startswith("# crm-guard policy suggest: every source identity")
    assert not parse_policy(text).agents


def test_one_salesforce_agent_on_two_apis_is_one_candidate() -> None:
    """Salesforce names the API in changeOrigin (rest, soap): the rule keeps the user and the app,
    so an agent writing through both is one candidate, its counts merged."""
    def sf(api: str, changes: int, fields: dict[str, int]) -> dict[str, Any]:
        return row(change_source=api, user_id="0055g00000002MnAAI", app_id="EnrichBot", fields=fields,
                   changes=changes) | {"identity": {"vendor": "salesforce", "change_source": api,
                                                    "user_id": "0055g00000002MnAAI", "app_id": "EnrichBot"}}
    text = suggest_policy([sf("rest", 40, {"Title": 30}), sf("soap", 5, {"Phone": 5})])
    agents = parse_policy(text).agents
    assert list(agents) == ["salesforce-app-enrichbot"]
    (rule,) = agents["salesforce-app-enrichbot"].identities
    assert (rule.vendor, rule.user_id, rule.app_id, rule.change_source) == (
        "salesforce", "0055g00000002MnAAI", "EnrichBot", None)
    assert sorted(agents["salesforce-app-enrichbot"].allowed_fields or []) == ["Phone", "Title"]
    assert "45 field changes" in text
