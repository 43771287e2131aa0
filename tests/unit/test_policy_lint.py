"""policy_lint: the attribution mistakes a valid policy can hold, and the look-alikes that are fine."""

from __future__ import annotations

from app.policy_lint import covers, lint_policy, summary_lines
from detectors.policy import IdentityRule, Policy


def lint(data: dict) -> list[str]:
    return [str(w) for w in lint_policy(Policy.model_validate(data))]


def rule(**kw: str) -> IdentityRule:
    return IdentityRule.model_validate({"vendor": "hubspot", **kw})


def test_the_shipped_example_shape_has_no_warnings() -> None:
    assert (
        lint(
            {
                "agents": {
                    "enrich-bot": {
                        "identities": [
                            {"vendor": "hubspot", "change_source": "INTEGRATION", "app_id": "4242"}
                        ],
                        "denied_fields": ["utm_*"],
                        "allowed_fields": ["city", "jobtitle"],
                    },
                    "stage-bot": {"identities": [{"vendor": "salesforce", "user_id": "005A"}]},
                },
                "humans": [{"vendor": "hubspot", "change_source": "CRM_UI"}],
                # more general than the agent's rule but tried after it: the agent keeps its changes
                "integrations": [{"vendor": "hubspot", "change_source": "INTEGRATION"}],
            }
        )
        == []
    )


def test_an_agent_without_identities_is_never_attributed() -> None:
    (w,) = lint({"agents": {"ghost": {}}})
    assert w.startswith("agents.ghost.identities: no identity rule")


def test_a_vendor_only_rule_claims_every_change_of_that_vendor() -> None:
    (w,) = lint({"agents": {"greedy": {"identities": [{"vendor": "pipedrive"}]}}})
    assert w.startswith("agents.greedy.identities.0: names only the vendor") and "human edit" in w


def test_a_rule_covered_by_an_earlier_one_never_applies() -> None:
    found = lint(
        {
            "agents": {
                "first": {"identities": [{"vendor": "hubspot", "change_source": "INTEGRATION"}]},
                "second": {
                    "identities": [{"vendor": "hubspot", "change_source": "integration", "app_id": "7"}]
                },
            },
            "humans": [{"vendor": "hubspot", "change_source": "INTEGRATION", "user_id": "5"}],
        }
    )
    assert len(found) == 2
    assert found[0].startswith(
        "agents.second.identities.0: never applies: agent first's rule agents.first.identities.0"
    )
    assert found[1].startswith("humans.0: never applies: agent first's rule")


def test_unknown_vendors_and_fields_both_allowed_and_denied() -> None:
    found = lint(
        {
            "agents": {
                "bot": {
                    "identities": [{"vendor": "hubspto", "user_id": "1"}],
                    "allowed_fields": ["city", "utm_source"],
                    "denied_fields": ["utm_*"],
                }
            },
            "fields": {"zoho": {"high": ["x"]}},
        }
    )
    assert any(w.startswith("agents.bot.allowed_fields: also denied: utm_source") for w in found)
    assert any("vendor 'hubspto' is none of hubspot" in w for w in found)
    assert any(w.startswith("fields.zoho:") for w in found)


def test_covers_is_field_by_field_and_case_insensitive() -> None:
    assert covers(rule(change_source="API"), rule(change_source="api", user_id="9"))
    assert not covers(rule(change_source="API", user_id="9"), rule(change_source="API"))
    assert not covers(rule(user_id="9"), rule(user_id="10"))
    assert not covers(rule(), IdentityRule(vendor="salesforce"))


def test_summary_fills_in_the_defaults() -> None:
    lines = summary_lines(
        Policy.model_validate({"agents": {"bot": {"identities": [{"vendor": "hubspot", "app_id": "1"}]}}})
    )
    assert "  caps          50/60m (defaults)" in lines and "  on a breach   pause" in lines
