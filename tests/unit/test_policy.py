"""The policy file: validation messages name the bad key; tiers; caps; autonomy."""

from __future__ import annotations

import pytest

from app.policy_file import PolicyError, load_policy, parse_policy
from detectors.policy import Autonomy, Tier

FULL = """
version: 1
agents:
  enrich-bot:
    description: fills job titles and phones
    identities:
      - {vendor: hubspot, change_source: INTEGRATION, app_id: 4242}
      - {vendor: salesforce, user_id: 005xx0000012345, app_id: EnrichBot}
      - {vendor: pipedrive, user_id: 12345, change_source: api}
    allowed_fields: [jobtitle, phone, Title, Phone, job_title, phones]
    denied_fields: [utm_*]
    allowed_object_types: [contact]
    velocity_caps:
      - {max_records: 50, window: 1h}
      - {max_records: 10, window: 1h, tier: high}
    pause_on_breach: true
    autonomy: {low: act, medium: propose, high: observe}
humans:
  - {vendor: hubspot, change_source: CRM_UI}
automations:
  - {vendor: hubspot, change_source: WORKFLOWS}
imports:
  - {vendor: hubspot, change_source: IMPORT}
defaults:
  velocity_caps: [{max_records: 50, window: 1h}]
  pause_on_breach: true
fields:
  hubspot:
    high: [commission_rate]
    low: [hs_persona]
detectors:
  record_state: {retention: 30d}
  alerts: {resolve_after: 6h}
"""


def test_full_example_validates() -> None:
    policy = parse_policy(FULL)
    bot = policy.agents["enrich-bot"]
    assert bot.identities[0].app_id == "4242"  # YAML ints become string ids
    assert policy.caps_for("enrich-bot")[1].tier is Tier.HIGH
    assert policy.tier_of("hubspot", "commission_rate") is Tier.HIGH
    assert policy.tier_of("hubspot", "utm_campaign") is Tier.HIGH
    assert policy.tier_of("hubspot", "hs_persona") is Tier.LOW
    assert policy.tier_of("salesforce", "StageName") is Tier.HIGH
    assert policy.tier_of("pipedrive", "stage_id") is Tier.HIGH
    assert policy.tier_of("hubspot", "lifecyclestage") is Tier.MEDIUM
    assert policy.autonomy_for("enrich-bot", Tier.HIGH) is Autonomy.OBSERVE
    assert policy.detectors.record_state.retention == 30 * 86_400_000


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("agents: {bot: {identitiez: []}}", "agents.bot.identitiez"),
        ("agents: {bot: {velocity_caps: [{max_records: 0}]}}", "agents.bot.velocity_caps.0.max_records"),
        ("defaults: {velocity_caps: [{max_records: 5, window: soon}]}", "defaults.velocity_caps.0.window"),
        ("agents: {'bad name!': {}}", "bad name!"),
        ("humans: [{change_source: CRM_UI}]", "humans.0.vendor"),
        ("detectors: {nope: {}}", "detectors.nope"),
        ("agents: {bot: {autonomy: {high: yolo}}}", "agents.bot.autonomy.high"),
    ],
)
def test_errors_name_the_bad_key(text: str, names: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    assert names in str(info.value) and str(info.value).startswith("p.yaml: ")


def test_unreadable_and_non_mapping_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="top level must be a mapping"):
        load_policy(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("agents: [\n")
    with pytest.raises(PolicyError, match="not valid YAML at line"):
        load_policy(broken)


def test_empty_file_is_the_default_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_policy(empty).agents == {}


def test_field_labels_must_not_be_empty() -> None:
    with pytest.raises(PolicyError, match="field_labels"):
        parse_policy("field_labels: {pipedrive: {abc: ' '}}\n")
