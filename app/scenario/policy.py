"""The policy file of a generated scenario: the agent fleet, the team, and field tiers for custom fields.

It is an ordinary policy (detectors/policy.py), written as YAML with comments, so it doubles as a
worked example: each agent lists its identity in all three vendors and the fields it may write,
in every vendor's spelling. Beyond the shipped defaults it declares only what a real team would
have to: the Pipedrive custom-field hashes of the UTM fields (high tier) and of lead status and
lifecycle (medium, and ignored by mass_overwrite like HubSpot's hs_lead_status), Salesforce's
Rating, and the team's Salesforce sales process (five open stages).
"""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped]

from app.scenario.vendors import PIPEDRIVE_CUSTOM, PIPEDRIVE_FIELDS
from app.scenario.world import AGENTS, Roster, build_actors
from detectors.policy import Policy
from detectors.settings import MassOverwriteSettings

_PD_PERSON = PIPEDRIVE_FIELDS["person"]
_PD_DEAL = PIPEDRIVE_FIELDS["deal"]



def _pipedrive_labels() -> dict[str, str]:
    """Custom field key -> its label as a Pipedrive account would show it (`UTM source`)."""
    labels = {}
    for obj, names in PIPEDRIVE_CUSTOM.items():
        for name in names:
            words = name.split("_")
            label = " ".join(["UTM" if w == "utm" else w for w in words])
            labels[PIPEDRIVE_FIELDS[obj][name]] = label[0].upper() + label[1:]
    return dict(sorted(labels.items()))


AGENT_SCOPES: dict[str, dict[str, Any]] = {
    "enrich-agent": {
        "description": "Fills empty contact and lead fields from an enrichment provider (never overwrites).",
        "allowed_object_types": ["contact", "lead"],
        "allowed_fields": [
            "jobtitle",
            "industry",
            "city",
            "phone",
            "utm_source",
            "utm_medium",
            "Title",
            "Industry",
            "City",
            "MailingCity",
            "Phone",
            "UTM_Source__c",
            "UTM_Medium__c",
            "job_title",
            "phones",
            _PD_PERSON["industry"],
            _PD_PERSON["city"],
            _PD_PERSON["utm_source"],
            _PD_PERSON["utm_medium"],
        ],
    },
    "intake-agent": {
        "description": "Turns inbound e-mails into contacts and leads, updates known senders, "
        "merges duplicates.",
        "allowed_object_types": ["contact", "lead"],
        "allowed_fields": [
            "firstname",
            "lastname",
            "email",
            "phone",
            "company",
            "hubspot_owner_id",
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "Company",
            "OwnerId",
            "first_name",
            "last_name",
            "name",
            "emails",
            "phones",
            "owner_id",
            _PD_PERSON["company_name"],
        ],
    },
    "pipeline-agent": {
        "description": "Moves a deal one stage forward after the rep's call or meeting.",
        "allowed_object_types": ["deal"],
        "allowed_fields": ["dealstage", "StageName", "Probability", "ForecastCategoryName", "stage_id"],
    },
    "forecast-agent": {
        "description": "Maintains its own next-step suggestion on open deals.",
        "allowed_object_types": ["deal"],
        "allowed_fields": ["ai_next_step", "AI_Next_Step__c", _PD_DEAL["next_step"]],
        "denied_fields": [
            "amount",
            "Amount",
            "value",
            "closedate",
            "CloseDate",
            "expected_close_date",
            "hubspot_owner_id",
            "OwnerId",
            "owner_id",
        ],
    },
    "notes-agent": {
        "description": "Logs call notes as activities on deals (any field of the notes it creates, "
        "nothing else).",
        "allowed_object_types": ["activity"],
        "high_tier_allowed": True,
    },
    "scoring-agent": {
        "description": "Moves leads through lead statuses from engagement signals.",
        "allowed_object_types": ["contact", "lead"],
        "allowed_fields": ["hs_lead_status", "Status", _PD_PERSON["lead_status"]],
    },
    "hygiene-agent": {
        "description": "Fixes capitalisation and whitespace of names and titles.",
        "allowed_object_types": ["contact", "lead", "company"],
        "allowed_fields": [
            "jobtitle",
            "firstname",
            "lastname",
            "phone",
            "Title",
            "FirstName",
            "LastName",
            "Phone",
            "job_title",
            "first_name",
            "last_name",
            "name",
            "phones",
        ],
    },
}


def scenario_policy(roster: Roster, vendors: tuple[str, ...]) -> dict[str, Any]:
    """The policy as a plain dict (validated by detectors.policy.Policy before it is returned)."""
    actors = {v: build_actors(v, roster) for v in vendors}
    agents: dict[str, Any] = {}
    for name in AGENTS:
        entry: dict[str, Any] = {"description": AGENT_SCOPES[name]["description"], "identities": []}
        for v in vendors:
            a = actors[v][name]
            if v == "hubspot":
                entry["identities"].append(
                    {"vendor": v, "change_source": a.change_source, "app_id": a.app_id}
                )
            elif v == "salesforce":
                entry["identities"].append(
                    {"vendor": v, "user_id": a.user_id, "app_id": a.identity()["app_id"]}
                )
            else:
                entry["identities"].append({"vendor": v, "user_id": a.user_id, "change_source": "api"})
        for key in ("allowed_object_types", "allowed_fields", "denied_fields", "high_tier_allowed"):
            if key in AGENT_SCOPES[name]:
                entry[key] = AGENT_SCOPES[name][key]
        # The team of the source case: agents write directly (no proposals) within their scope.
        entry["autonomy"] = {"low": "act", "medium": "act", "high": "act"}
        entry["pause_on_breach"] = True
        agents[name] = entry
    humans: list[dict[str, Any]] = []
    automations: list[dict[str, Any]] = []
    integrations: list[dict[str, Any]] = []
    imports: list[dict[str, Any]] = []
    for v in vendors:
        for name in roster.humans:
            a = actors[v][name]
            if v == "hubspot":
                humans.append({"vendor": v, "user_id": a.user_id})
            elif v == "salesforce":
                humans.append({"vendor": v, "user_id": a.user_id, "app_id": "SfdcInternalAPI"})
            else:
                humans.append({"vendor": v, "user_id": a.user_id, "change_source": "app"})
        wf, forms, billing = actors[v]["workflows"], actors[v]["forms"], actors[v]["billing-sync"]
        if v == "hubspot":
            automations += [
                {"vendor": v, "change_source": "WORKFLOWS"},
                {"vendor": v, "change_source": "FORM"},
            ]
            integrations.append({"vendor": v, "change_source": "INTEGRATION", "app_id": billing.app_id})
            imports.append({"vendor": v, "change_source": "IMPORT"})
        elif v == "salesforce":
            automations += [{"vendor": v, "user_id": wf.user_id}, {"vendor": v, "user_id": forms.user_id}]
            integrations.append({"vendor": v, "user_id": billing.user_id, "app_id": "StripeConnector"})
            imports.append({"vendor": v, "app_id": "DataLoaderBulkUI"})
        else:
            automations += [{"vendor": v, "user_id": wf.user_id}, {"vendor": v, "user_id": forms.user_id}]
            integrations.append({"vendor": v, "user_id": billing.user_id, "change_source": "api"})
    ignore = list(MassOverwriteSettings().ignore_fields) + [
        _PD_PERSON["lead_status"],
        _PD_PERSON["lifecycle"],
        "Rating",
    ]
    data: dict[str, Any] = {
        "version": 1,
        "agents": agents,
        "humans": humans,
        "automations": automations,
        "integrations": integrations,
        "imports": imports,
        "defaults": {"velocity_caps": [{"max_records": 50, "window": "1h"}], "pause_on_breach": True},
        "fields": {
            "pipedrive": {
                "high": [_PD_PERSON["utm_source"], _PD_PERSON["utm_medium"], _PD_PERSON["utm_campaign"]],
                "medium": [_PD_PERSON["lead_status"], _PD_PERSON["lifecycle"]],
            },
            "salesforce": {"medium": ["Rating", "Status"]},
        },
        # What Pipedrive's /v1/personFields and /v1/dealFields say of the custom fields' hash keys.
        "field_labels": {"pipedrive": _pipedrive_labels()},
        "detectors": {
            "mass_overwrite": {"ignore_fields": ignore},
            "stage_anomaly": {
                "pipelines": {
                    "salesforce": {
                        "default": {
                            "stages": [
                                "Prospecting",
                                "Qualification",
                                "Needs Analysis",
                                "Proposal/Price Quote",
                                "Negotiation/Review",
                            ],
                            "won": ["Closed Won"],
                            "lost": ["Closed Lost"],
                        }
                    }
                }
            },
        },
    }
    Policy.model_validate(data)
    return data


_HEADER = """\
# crm-guard policy for a generated scenario (app/scenario; `crm-guard scenario`).
# Seven agents, each with its identity in HubSpot (changeSource + sourceId app id), Salesforce
# (commitUser + the client in changeOrigin) and Pipedrive (meta.user_id + change_source api),
# the fields it may write in each vendor's spelling, and the team (humans), automations,
# a known integration and imports. Anything else that writes is `unknown`.
# Like the team of our source case, this one lets its agents write directly (autonomy `act`)
# within their scope; set `propose` to route a tier through the review queue instead.
# Pipedrive custom fields are named by their 40-character hashes (see app/scenario/vendors.py).
"""


def scenario_policy_yaml(roster: Roster, vendors: tuple[str, ...]) -> str:
    """The policy file text."""
    text: str = yaml.safe_dump(scenario_policy(roster, vendors), sort_keys=False, width=110)
    return _HEADER + text
