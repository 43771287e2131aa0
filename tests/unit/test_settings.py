"""Settings from the environment: the stages a worker runs."""

from __future__ import annotations

import pytest

from app.config import STAGES, SettingsError, load_settings


def test_a_worker_runs_every_stage_unless_told_otherwise() -> None:
    assert load_settings(env={}).stages == list(STAGES)
    assert load_settings(env={"CRM_GUARD_STAGES": " ingest, record "}).stages == ["ingest", "record"]


@pytest.mark.parametrize(("value", "message"), [
    ("ingest,ingest", "a stage is named twice"),
    ("ingest,filter", "stages.1: Input should be 'ingest', 'record', 'link' or 'actor'"),
    (",", "at least 1 item"),
])
def test_bad_stage_lists_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env={"CRM_GUARD_STAGES": value})


def test_a_worker_without_the_actor_stage_runs_no_page_or_review_services() -> None:
    from app.runtime.assembly import build_runtime
    from detectors.policy import Policy

    full = load_settings(env={"CRM_GUARD_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    runtime, shared = build_runtime(full, Policy(), idempotent=False)
    assert shared["review"] is not None and shared["timeline"] is not None
    assert {type(s).__name__ for s in runtime.extra_services} >= {"TimelineService", "DeliveryRunner"}
    record_only = full.with_overrides(stages=["record"])
    runtime, shared = build_runtime(record_only, Policy(), idempotent=False)
    assert shared["review"] is None and shared["timeline"] is None and runtime.extra_services == []


def test_a_config_file_that_is_missing_or_not_yaml_is_one_line_naming_it(tmp_path) -> None:
    broken = tmp_path / "crm-guard.yaml"
    broken.write_text("bootstrap_servers: [kafka:9092\n")
    with pytest.raises(SettingsError) as bad:
        load_settings(env={}, file=str(broken))
    assert str(bad.value).startswith(f"config file {broken}: not valid YAML at line 2, column 1:")
    assert "\n" not in str(bad.value)
    with pytest.raises(SettingsError) as missing:
        load_settings(env={"CRM_GUARD_CONFIG": str(tmp_path / "nope.yaml")})
    assert str(missing.value) == f"cannot read config file {tmp_path / 'nope.yaml'}: No such file or directory"


def test_web_tls_keys_and_client_ca_need_the_servers_certificate() -> None:
    with pytest.raises(SettingsError, match="need web_tls_certfile"):
        load_settings(env={"CRM_GUARD_WEB_TLS_CLIENT_CAFILE": "/etc/ssl/ca.pem"})
    assert load_settings(env={"CRM_GUARD_WEB_TLS_CERTFILE": "/x/server.pem"}).web_tls_certfile == "/x/server.pem"
