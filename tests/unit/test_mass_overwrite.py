"""mass_overwrite at its boundaries: fills vs overwrites, blanking, windows, tiers, humans."""

from __future__ import annotations

from detectors.base import Severity
from detectors.events import ActorKind
from detectors.mass_overwrite import MassOverwriteDetector
from detectors.settings import MassOverwriteSettings
from tests.unit.helpers_events import AGENT, HUMAN, H, M, Run, agents_policy, event


def seeded(field: str, n: int, value: str = "google", start: int = 0, **kw) -> list:
    """n records whose field a human set (the values the agent will clobber)."""
    return [event(f"r{i}", {field: value}, at=start, by="rep", kind=HUMAN, **kw) for i in range(n)]


def overwrites(
    field: str,
    n: int,
    value: str = "enriched",
    start: int = H,
    step: int = M,
    by: str = "enricher",
    kind: ActorKind = AGENT,
    first: int = 0,
    **kw,
) -> list:
    return [
        event(f"r{first + i}", {field: value}, at=start + i * step, by=by, kind=kind, **kw) for i in range(n)
    ]


def run(**settings) -> Run:
    return Run(MassOverwriteDetector(), policy=agents_policy("enricher", mass_overwrite=settings))


def alerting(r: Run) -> list:
    return [f for f in r.of("mass_overwrite") if f.severity is not Severity.INFO]


def test_filling_empty_fields_is_not_counted_even_near_the_cap():
    r = run()
    r.feed(*[event(f"r{i}", {"jobtitle": ""}, by="rep", kind=HUMAN) for i in range(49)])
    r.feed(*overwrites("jobtitle", 49, value="CTO"))
    assert r.of("mass_overwrite") == []


def test_unknown_prior_is_not_an_overwrite():
    r = run()
    r.feed(*overwrites("jobtitle", 20, value="CTO"))  # the guard never saw these fields
    assert r.of("mass_overwrite") == []
    entry = r.states["mass_overwrite"]["enricher"]
    assert entry["u"]["hubspot|jobtitle"][1] == 20


def test_low_tier_threshold_minus_one_is_evidence_only_and_threshold_warns():
    r = run()
    r.feed(*seeded("jobtitle", 5, "Engineer"))
    r.feed(*overwrites("jobtitle", 4, value="CTO"))
    assert [f.severity for f in r.of("mass_overwrite")] == [Severity.INFO] * 4
    r.feed(*overwrites("jobtitle", 1, value="CTO", first=4, start=H + 10 * M))
    last = r.of("mass_overwrite")[-1]
    assert last.severity is Severity.WARNING and not last.pause
    assert last.group == "jobtitle" and last.details["count"] == 5 and last.details["threshold"] == 5
    assert last.actor_key == "enricher" and last.agent == "enricher"


def test_high_tier_field_critical_at_three_and_pauses_per_policy():
    r = run()
    r.feed(*seeded("utm_source", 3))
    r.feed(*overwrites("utm_source", 3))
    sev = [f.severity for f in r.of("mass_overwrite")]
    assert sev == [Severity.INFO, Severity.INFO, Severity.CRITICAL]
    assert r.of("mass_overwrite")[-1].pause is True
    assert r.of("mass_overwrite")[-1].details["from"] == "google"

    quiet = Run(MassOverwriteDetector(), policy=agents_policy("enricher", pause=False))
    quiet.feed(*seeded("utm_source", 3))
    quiet.feed(*overwrites("utm_source", 3))
    assert quiet.of("mass_overwrite")[-1].severity is Severity.CRITICAL
    assert quiet.of("mass_overwrite")[-1].pause is False


def test_short_window_edge_is_exclusive_at_exactly_one_window():
    # five overwrites spread over exactly 60 minutes: the first has left the (t-1h, t] window
    r = run(long_threshold=50, high_tier_long_threshold=50, human_threshold_factor=1.0)
    r.feed(*seeded("jobtitle", 5, "Engineer"))
    r.feed(*overwrites("jobtitle", 5, value="CTO", step=15 * M))
    assert alerting(r) == []
    # same spread one millisecond shorter: all five are inside
    r2 = run(long_threshold=50, high_tier_long_threshold=50, human_threshold_factor=1.0)
    r2.feed(*seeded("jobtitle", 5, "Engineer"))
    r2.feed(
        *[event(f"r{i}", {"jobtitle": "CTO"}, at=H + i * (15 * M) - (1 if i == 4 else 0)) for i in range(5)]
    )
    assert len(alerting(r2)) == 1


def test_blanking_counts_like_overwrite_with_its_own_label():
    r = run()
    r.feed(*seeded("utm_campaign", 3, "spring"))
    r.feed(*overwrites("utm_campaign", 3, value=""))
    last = r.of("mass_overwrite")[-1]
    assert last.severity is Severity.CRITICAL
    assert last.details["change"] == "blank" and last.details["blanked_in_long_window"] == 3
    assert "blanked" in last.summary


def test_slow_drip_under_the_cap_caught_by_the_long_window():
    # two overwrites of a high-tier field per hour, for ten hours: never 3 in one hour
    r = run()
    r.feed(*seeded("utm_source", 20))
    r.feed(*overwrites("utm_source", 20, step=30 * M))
    found = alerting(r)
    assert found, "slow drip must be caught"
    first = found[0]
    assert first.details["window_ms"] == 24 * H and first.details["count"] == 5
    assert first.severity is Severity.CRITICAL
    # the fifth faulty change is the one that raised it
    assert first.record_key.endswith("/r4")


def test_human_import_and_bulk_edit_never_warn():
    r = run()
    r.feed(*seeded("jobtitle", 40, "Engineer"))
    r.feed(*overwrites("jobtitle", 20, value="CTO", by="ops", kind=HUMAN, bulk=True))
    r.feed(*overwrites("jobtitle", 20, value="VP", by="csv", kind=ActorKind.IMPORT, first=20))
    assert r.of("mass_overwrite") == []


def test_human_hand_edits_need_three_times_the_threshold_and_never_pause():
    r = run()
    r.feed(*seeded("utm_source", 10))
    r.feed(*overwrites("utm_source", 8, by="marketer", kind=HUMAN))
    assert r.of("mass_overwrite") == []  # 3 x 3 = 9
    r.feed(*overwrites("utm_source", 1, by="marketer", kind=HUMAN, first=8, start=H + 20 * M))
    (f,) = r.of("mass_overwrite")
    assert f.severity is Severity.WARNING and f.pause is False and f.agent is None


def test_agent_overwriting_its_own_values_is_not_counted_by_default():
    r = run()
    r.feed(*overwrites("jobtitle", 10, value="A", start=0))  # unknown priors
    r.feed(*overwrites("jobtitle", 10, value="B", start=H))
    assert alerting(r) == []
    r2 = run(count_own_values=True)
    r2.feed(*overwrites("jobtitle", 10, value="A", start=0))
    r2.feed(*overwrites("jobtitle", 10, value="B", start=H))
    assert alerting(r2)


def test_reformat_and_ignored_fields_are_not_overwrites():
    r = run()
    r.feed(*seeded("company", 10, "acme"))
    r.feed(*overwrites("company", 10, value=" ACME "))
    r.feed(*[event(f"d{i}", {"dealstage": "qualifiedtobuy"}, by="rep", kind=HUMAN) for i in range(10)])
    r.feed(*[event(f"d{i}", {"dealstage": "closedwon"}, at=H + i) for i in range(10)])
    assert r.of("mass_overwrite") == []


def test_redelivery_is_not_counted_twice():
    det = MassOverwriteDetector()
    r = Run(det, policy=agents_policy("enricher"))
    r.feed(*seeded("jobtitle", 5, "Engineer"))
    r.feed(*overwrites("jobtitle", 4, value="CTO"))
    obs = r.last_obs
    state = r.states["mass_overwrite"]
    assert det.observe(obs, state, r.policy) == []  # the same event again: nothing new
    assert state["enricher"]["f"]["hubspot|jobtitle"].__len__() == 4


def test_same_record_twice_counts_once():
    r = run()
    r.feed(*seeded("jobtitle", 1, "Engineer"))
    r.feed(*[event("r0", {"jobtitle": f"v{i}"}, at=H + i * M, by="enricher") for i in range(1)])
    r.feed(*[event("r0", {"jobtitle": "x"}, at=H + 5 * M, by="rep", kind=HUMAN)])
    r.feed(*[event("r0", {"jobtitle": f"w{i}"}, at=H + (10 + i) * M) for i in range(1)])
    assert all(f.details["records_in_window"] == 1 for f in r.of("mass_overwrite"))


def test_state_is_bounded_under_many_fields_and_records():
    settings = MassOverwriteSettings()
    r = run()
    fields = [f"custom_{i}" for i in range(settings.max_fields + 20)]
    for j, field in enumerate(fields):
        r.feed(*[event(f"r{i}", {field: "a"}, at=j, by="rep", kind=HUMAN) for i in range(3)])
        r.feed(*[event(f"r{i}", {field: "b"}, at=H + j) for i in range(3)])
    r.feed(*seeded("jobtitle", 400, "Engineer", start=2 * H))
    r.feed(*overwrites("jobtitle", 400, value="CTO", start=3 * H, step=1000))
    entry = r.states["mass_overwrite"]["enricher"]
    assert len(entry["f"]) <= settings.max_fields
    assert all(len(v) <= settings.max_records_per_field for v in entry["f"].values())
    assert len(entry["e"]) <= 64
    # windows are pruned by event time, and idle actors compacted
    r.feed(*seeded("jobtitle", 1, "Z", start=30 * H))
    r.feed(event("r0", {"jobtitle": "Y"}, at=31 * H))
    assert len(r.states["mass_overwrite"]["enricher"]["f"]["hubspot|jobtitle"]) == 1
    # two actors: the agent, and the human who overwrote the agent's value of r0
    assert (
        MassOverwriteDetector.compact(r.states["mass_overwrite"], r.last_obs.event.occurred_at + 8 * 24 * H)
        == 2
    )
    assert r.states["mass_overwrite"] == {}


def test_deterministic():
    def go() -> list[dict]:
        r = run()
        r.feed(*seeded("utm_source", 30))
        r.feed(*overwrites("utm_source", 30, step=7 * M))
        return [f.to_dict() for f in r.findings]

    assert go() == go()


def test_no_pii_in_summary_or_details():
    r = run()
    r.feed(*seeded("email", 3, "ann@example.com"))
    r.feed(*overwrites("email", 3, value="bob@example.com"))
    text = repr([f.to_dict() for f in r.findings])
    assert "example.com" not in text and r.of("mass_overwrite")[-1].severity is Severity.CRITICAL


def test_out_of_order_events_count_exactly():
    r = run()
    r.feed(*seeded("jobtitle", 6, "Engineer"))
    # overwrites at +40, +50, +10 (late), +55 min: the late one still counts, in time order
    for i, minute in enumerate([40, 50, 10, 55]):
        r.feed(event(f"r{i}", {"jobtitle": "CTO"}, at=H + minute * M))
    records = r.states["mass_overwrite"]["enricher"]["f"]["hubspot|jobtitle"]
    times = [at for at, _ in records.values()]
    assert times == sorted(times)
    assert r.of("mass_overwrite")[-1].details["records_in_window"] == 4
    r.feed(event("r4", {"jobtitle": "CTO"}, at=H + 71 * M))  # +10 has left (+11, +71]: 4 in window
    assert r.of("mass_overwrite")[-1].details["records_in_window"] == 4
    assert alerting(r) == []
    r.feed(event("r5", {"jobtitle": "CTO"}, at=H + 72 * M))  # +40, +50, +55, +71, +72: 5 -> warning
    assert alerting(r)[-1].details["count"] == 5


def blank_events(plan: list[tuple[str, list[str]]], start: int = H, step: int = 8 * M, **kw) -> list:
    """One blanking event per (record, fields) at `step` apart."""
    return [
        event(rid, {f: "" for f in fields}, at=start + i * step, **kw) for i, (rid, fields) in enumerate(plan)
    ]


def seeded_people(n: int) -> list:
    return [
        event(f"r{i}", {"jobtitle": "Engineer", "phone": "+1 415 555 0100"}, by="rep", kind=HUMAN)
        for i in range(n)
    ]


def test_blanking_counts_across_fields_and_warns_at_the_third_record():
    # job titles on some records, phones on others: one behaviour, counted together
    r = run()
    r.feed(*seeded_people(5))
    r.feed(*blank_events([("r0", ["jobtitle"]), ("r1", ["phone"])]))
    assert alerting(r) == [] and [f.group for f in r.of("mass_overwrite")] == ["blanking", "blanking"]
    r.feed(*blank_events([("r2", ["jobtitle"])], start=H + 20 * M))
    (f,) = alerting(r)
    assert f.group == "blanking" and f.severity is Severity.WARNING and not f.pause
    assert f.details["count"] == 3 and f.details["threshold"] == 3 and f.details["window_ms"] == H
    assert f.details["fields_blanked"] == ["jobtitle", "phone"] and f.details["change"] == "blank"
    assert "555" not in repr(f.to_dict())  # the phone's old value is masked
    # per field (the old rule) this would be two job titles and one phone: nothing yet
    per_field = run(blank_threshold=5, blank_long_threshold=10)
    per_field.feed(*seeded_people(5))
    per_field.feed(*blank_events([("r0", ["jobtitle"]), ("r1", ["phone"]), ("r2", ["jobtitle"])]))
    assert alerting(per_field) == []


def test_one_event_blanking_two_fields_of_a_record_counts_it_once():
    r = run()
    r.feed(*seeded_people(3))
    found = r.feed(*blank_events([("r0", ["jobtitle", "phone"]), ("r1", ["jobtitle", "phone"])]))
    assert len(found) == 2 and all(f.severity is Severity.INFO for f in found)
    assert found[-1].details["records_in_window"] == 2 and found[-1].details["fields"] == [
        "jobtitle",
        "phone",
    ]
    r.feed(*blank_events([("r2", ["phone"])], start=H + 30 * M))
    assert alerting(r)[0].details["count"] == 3


def test_blanking_windows_and_the_benign_side():
    # two blanks an hour apart are not a short-window streak; the fifth in 24 h is the long one
    r = run()
    r.feed(*seeded_people(5))
    r.feed(*blank_events([(f"r{i}", ["jobtitle" if i % 2 else "phone"]) for i in range(4)], step=H))
    assert alerting(r) == []
    r.feed(*blank_events([("r4", ["jobtitle"])], start=H + 4 * H))
    (f,) = alerting(r)
    assert f.details["window_ms"] == 24 * H and f.details["count"] == 5
    # a person clearing fields by hand needs 3 x 3 records in an hour, and is never paused
    h = run()
    h.feed(*seeded_people(10))
    h.feed(*blank_events([(f"r{i}", ["jobtitle"]) for i in range(8)], step=M, by="ops", kind=HUMAN))
    assert h.of("mass_overwrite") == []
    h.feed(*blank_events([("r8", ["phone"])], start=H + 9 * M, by="ops", kind=HUMAN))
    (g,) = h.of("mass_overwrite")
    assert g.severity is Severity.WARNING and g.pause is False and g.group == "blanking"
    # filling empty fields never counts, however many fields
    fill = run()
    fill.feed(*[event(f"r{i}", {"jobtitle": "", "phone": ""}, by="rep", kind=HUMAN) for i in range(10)])
    fill.feed(*[event(f"r{i}", {"jobtitle": "CTO", "phone": "+1 415 555 0101"}, at=H + i) for i in range(10)])
    assert fill.of("mass_overwrite") == []


def test_overwrites_stay_per_field_and_blanks_do_not_add_to_them():
    r = run()
    r.feed(
        *[event(f"r{i}", {"jobtitle": "Engineer", "city": "Paris"}, by="rep", kind=HUMAN) for i in range(10)]
    )
    r.feed(*overwrites("jobtitle", 4, value="CTO"))
    r.feed(*overwrites("city", 4, value="Lyon", first=4, start=H + 10 * M))
    r.feed(*blank_events([("r8", ["jobtitle"])], start=H + 20 * M))
    assert alerting(r) == []  # 4 + 4 overwrites in two fields, one blank: each below its threshold
    assert {f.group for f in r.of("mass_overwrite")} == {"jobtitle", "city", "blanking"}
    r.feed(*overwrites("jobtitle", 1, value="CTO", first=9, start=H + 30 * M))
    (f,) = alerting(r)
    assert f.group == "jobtitle" and f.details["count"] == 5 and "blank" not in f.summary


def test_blanking_a_high_tier_field_is_critical_at_the_high_tier_threshold():
    r = run(blank_threshold=4)
    r.feed(*seeded("utm_campaign", 3, "spring"))
    r.feed(*overwrites("utm_campaign", 3, value=""))
    (f,) = alerting(r)
    assert f.severity is Severity.CRITICAL and f.pause is True and f.details["threshold"] == 3
