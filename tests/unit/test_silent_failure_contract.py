"""What every silent-failure detector promises: unique names and stages, JSON-only state that
survives a changelog round trip (plus the river model's snapshot/restore) without changing a
finding, determinism, and silence on benign look-alikes over several simulated days."""

from __future__ import annotations

import json
import random

from detectors.activity_anomaly import ActivityAnomalyDetector
from detectors.base import Severity, Stage
from detectors.duplicate_spike import DuplicateIndexDetector, DuplicateSpikeDetector
from detectors.events import ActorKind, ObjectType
from detectors.mass_overwrite import MassOverwriteDetector
from detectors.override import OverrideDetector
from detectors.override_rate import OverrideRateDetector
from detectors.stage_anomaly import StageAnomalyDetector, StageEscalationDetector, SupportContextDetector
from tests.unit.helpers_events import HUMAN, T0, D, H, M, Run, agents_policy, event

CO, CT, DEAL = ObjectType.COMPANY, ObjectType.CONTACT, ObjectType.DEAL
DAY0 = (T0 // D + 1) * D - T0


def detectors() -> list:
    return [
        MassOverwriteDetector(),
        DuplicateIndexDetector(),
        DuplicateSpikeDetector(),
        StageAnomalyDetector(),
        SupportContextDetector(),
        StageEscalationDetector(),
        OverrideDetector(),
        OverrideRateDetector(),
        ActivityAnomalyDetector(),
    ]


def benign(days: int = 4, seed: int = 11) -> list:
    """Reps, imports, bulk edits, an enrichment agent filling empty fields near the 50/h cap,
    humans correcting humans, merges, tickets, sales calls, and an agent advancing deals one
    stage after a sales call."""
    rng = random.Random(seed)  # noqa: S311 - test data
    out = []
    stages = ["appointmentscheduled", "qualifiedtobuy"]
    # day -1: an import creates the contacts (e-mails unique), leaving industry empty
    for i in range(600):
        out.append(
            event(
                f"c{i}",
                {
                    "email": f"p{i}@corp{i % 40}.example",
                    "jobtitle": "Engineer",
                    "industry": "",
                    "utm_source": "google",
                },
                at=DAY0 - D + i,
                by="csv",
                kind=ActorKind.IMPORT,
                operation="create",
                related=[(CO, str(i % 40))],
            )
        )
    for d in range(40):
        out.append(
            event(
                f"d{d}",
                {"dealstage": "appointmentscheduled", "amount": "1000"},
                at=DAY0 - D + d,
                by="rep0",
                kind=HUMAN,
                object_type=DEAL,
                operation="create",
                related=[(CO, str(d))],
            )
        )
    filled = 0
    for day in range(days):
        base = DAY0 + day * D
        for hour in range(9, 17):
            t = base + hour * H
            for w in range(12):  # the agent fills ~4 empty fields per 5 minutes (48/h, under the cap)
                for k in range(4):
                    if filled < 600:
                        out.append(
                            event(
                                f"c{filled}",
                                {"industry": rng.choice(["Software", "Retail", "Health"])},
                                at=t + w * 5 * M + k * 1000,
                            )
                        )
                        filled += 1
                    else:
                        rid = f"c{rng.randrange(600)}"
                        out.append(
                            event(
                                rid,
                                {"hs_enrichment_checked": f"{day}-{hour}-{w}-{k}"},
                                at=t + w * 5 * M + k * 1000,
                            )
                        )
            for rep in range(5):  # reps edit a few records an hour, correcting each other too
                for _ in range(rng.randint(2, 6)):
                    rid = f"c{rng.randrange(600)}"
                    field = rng.choice(["jobtitle", "city", "phone", "lifecyclestage"])
                    out.append(
                        event(
                            rid,
                            {field: f"{field}-{rng.randrange(1000)}"},
                            at=t + rng.randrange(H),
                            by=f"rep{rep}",
                            kind=HUMAN,
                        )
                    )
            if hour == 10:  # support tickets on some accounts, nobody moves those deals
                for c in rng.sample(range(20, 40), 3):
                    out.append(
                        event(
                            f"t{day}-{c}",
                            {"subject": "cannot log in"},
                            at=t + c * M,
                            by="portal",
                            kind=ActorKind.INTEGRATION,
                            object_type=ObjectType.TICKET,
                            operation="create",
                            related=[(CO, str(c))],
                        )
                    )
            if hour == 14:  # a sales call, then the agent advances that deal by one stage
                d = (day * 3) % 20
                out.append(
                    event(
                        f"call{day}",
                        {"hs_call_title": "demo"},
                        at=t,
                        by="rep1",
                        kind=HUMAN,
                        object_type=ObjectType.ACTIVITY,
                        operation="create",
                        related=[(CO, str(d))],
                    )
                )
                out.append(
                    event(
                        f"d{d}",
                        {"amount": "1200"},
                        at=t + M,
                        by="rep1",
                        kind=HUMAN,
                        object_type=DEAL,
                        related=[(CO, str(d))],
                    )
                )
                out.append(
                    event(
                        f"d{d}",
                        {"dealstage": stages[1]},
                        at=t + 30 * M,
                        by="closer",
                        object_type=DEAL,
                        related=[(CO, str(d))],
                    )
                )
        # an operations bulk edit and a re-import overwrite many values: benign look-alikes
        out += [
            event(f"c{i}", {"utm_source": "partner"}, at=base + 18 * H + i, by="ops", kind=HUMAN, bulk=True)
            for i in range(100 * day, 100 * day + 100)
        ]
        out += [
            event(
                f"c{i}",
                {"jobtitle": "Senior Engineer"},
                at=base + 19 * H + i,
                by="csv",
                kind=ActorKind.IMPORT,
            )
            for i in range(200)
        ]
        # a human merges two contacts a rep created by mistake
        out.append(
            event(
                f"x{day}",
                {"email": f"dup{day}@x.example"},
                at=base + 20 * H,
                by="rep2",
                kind=HUMAN,
                operation="create",
            )
        )
        out.append(
            event(
                f"y{day}",
                {"email": f"dup{day}@x.example"},
                at=base + 20 * H + M,
                by="rep3",
                kind=HUMAN,
                operation="create",
            )
        )
        out.append(
            event(
                f"x{day}", {}, at=base + 21 * H, by="rep2", kind=HUMAN, operation="merge", merged=[f"y{day}"]
            )
        )
    return sorted(out, key=lambda e: e.occurred_at)


def policy():
    return agents_policy("enricher", "closer")


def test_names_and_stages():
    dets = detectors()
    names = [d.name for d in dets]
    assert len(set(names)) == len(names)
    for d in dets:
        assert isinstance(d.stage, Stage)
        if d.stage is Stage.LINK:
            assert hasattr(d, "link_keys") and hasattr(d, "observe_link")
        else:
            assert hasattr(d, "observe")


def test_benign_look_alikes_stay_silent():
    r = Run(*detectors(), policy=policy())
    r.feed(*benign())
    loud = [f for f in r.findings if f.severity is not Severity.INFO]
    assert loud == [], [f.summary for f in loud[:5]]
    assert not any(f.pause for f in r.findings)
    assert len(r.states["override"]) > 0 and len(r.states["duplicate_index"]) > 600  # they did work


def test_json_round_trip_of_state_mid_stream_changes_nothing():
    stream = benign(days=3)
    half = len(stream) // 2
    whole = Run(*detectors(), policy=policy())
    expected = [f.to_dict() for f in whole.feed(*stream)]

    first = Run(*detectors(), policy=policy())
    got = [f.to_dict() for f in first.feed(*stream[:half])]
    fresh = detectors()
    for old, new in zip(first.detectors, fresh, strict=True):
        if hasattr(old, "snapshot"):
            for agent in old.agents():
                new.restore(agent, old.snapshot(agent))
    second = Run(*fresh, policy=first.policy)
    second.states = json.loads(json.dumps(first.states))
    got += [f.to_dict() for f in second.feed(*stream[half:])]
    assert got == expected


def test_deterministic():
    a = Run(*detectors(), policy=policy())
    b = Run(*detectors(), policy=policy())
    stream = benign(days=2, seed=5)
    assert [f.to_dict() for f in a.feed(*stream)] == [f.to_dict() for f in b.feed(*stream)]


def test_policy_file_sections_parse_and_reject_unknown_keys():
    import pytest
    import yaml
    from pydantic import ValidationError

    from detectors.policy import Policy

    text = """
detectors:
  mass_overwrite: {window: 30m, long_window: 2d, high_tier_threshold: 2}
  duplicate_spike: {default_region: GB, window: 12h, min_count: 4}
  stage_anomaly:
    support_window: 3d
    severities: {skip: critical}
    pipelines:
      pipedrive:
        "2": {stages: [6, 7, 8, 9]}
  override: {window: 48h}
  override_rate: {window: 14d, min_overrides: 8}
  activity_anomaly: {window: 10m, threshold: 0.9}
"""
    p = Policy.model_validate(yaml.safe_load(text))
    d = p.detectors
    assert d.mass_overwrite.window == 30 * M and d.mass_overwrite.long_window == 2 * D
    assert d.duplicate_spike.default_region == "GB" and d.override.window == 48 * H
    assert d.stage_anomaly.pipelines["pipedrive"]["2"].stages == ["6", "7", "8", "9"]
    assert d.stage_anomaly.severities == {"skip": "critical"}  # the other reasons keep their defaults:
    from detectors.stage_anomaly import _severity

    assert _severity(d.stage_anomaly, "skip") is Severity.CRITICAL
    assert _severity(d.stage_anomaly, "owner_inactive") is Severity.INFO
    assert d.activity_anomaly.window == 10 * M and d.override_rate.window == 14 * D
    with pytest.raises(ValidationError, match="treshold"):
        Policy.model_validate({"detectors": {"mass_overwrite": {"treshold": 3}}})
    with pytest.raises(ValidationError, match="long_window"):
        Policy.model_validate({"detectors": {"mass_overwrite": {"window": "2h", "long_window": "1h"}}})
    with pytest.raises(ValidationError):
        Policy.model_validate({"detectors": {"stage_anomaly": {"severities": {"skip": "loud"}}}})
