"""Runtime settings: one frozen object, loaded once (environment, then an optional file), passed down.

Nothing reads the environment at import time. Every setting has an environment variable
`CRM_GUARD_<NAME>` (upper case); `CRM_GUARD_CONFIG=path.yaml` names a YAML file whose keys are the
field names below. Secrets are SecretStr and never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from app.sinks.routing import RoutingConfig


class Topics(BaseModel):
    """Kafka topic names; override any with CRM_GUARD_TOPIC_<NAME> or the `topics:` file key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_hubspot: str = "crm.raw.hubspot"
    raw_salesforce: str = "crm.raw.salesforce"
    raw_pipedrive: str = "crm.raw.pipedrive"
    changes: str = "crm.changes"
    proposals: str = "crm.proposals"
    approved: str = "crm.approved"
    alerts: str = "guard.alerts"
    pause: str = "guard.pause"
    feedback: str = "guard.feedback"
    deadletter: str = "guard.deadletter"
    by_actor: str = "guard.by-actor"
    by_link: str = "guard.by-link"
    deliveries: str = "guard.deliveries"
    decisions: str = "guard.decisions"
    timeline: str = "guard.timeline"

    def raw(self, vendor: str) -> str:
        """The raw topic of a vendor."""
        return {"hubspot": self.raw_hubspot, "salesforce": self.raw_salesforce, "pipedrive": self.raw_pipedrive}[vendor]


STAGES = ("ingest", "record", "link", "actor")
"""The guard's stages in pipeline order (docs/ARCHITECTURE.md)."""


class Settings(BaseModel):
    """Everything the worker needs. `bootstrap_servers` empty means: start the embedded broker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    group_id: str = "crm-guard"
    partitions: int = Field(default=6, gt=0)
    replication_factor: int = Field(default=1, gt=0)
    topics: Topics = Field(default_factory=Topics)
    policy_file: str | None = None
    state_dir: str = ".crm-guard"
    local_state: bool = True
    """Keep a RocksDB copy (rocksdict) of every owned state partition under
    `<state_dir>/state/`, so a restarted worker reads its state from disk and only the changelog's
    tail from Kafka (app/runtime/local_store.py). Off: every restore reads the whole changelog."""
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:6066"
    web_tls_certfile: str | None = None
    """PEM certificate chain (with `web_tls_keyfile`, its key): the web server speaks HTTPS itself
    (vendors deliver webhooks only to https URLs; without these, terminate TLS at a proxy)."""
    web_tls_keyfile: str | None = None
    web_tls_client_cafile: str | None = None
    """PEM CA bundle: clients may present a certificate it signed (mTLS). /webhooks/salesforce
    then accepts a delivery with such a certificate as well as one with `salesforce_token`."""
    batch_max_records: int = Field(default=1000, gt=0)
    fetch_max_wait_ms: int = Field(default=500, gt=0)
    stages: list[Literal["ingest", "record", "link", "actor"]] = Field(
        default_factory=lambda: list(STAGES), min_length=1)
    """The stages this worker runs (`ingest,record` in the environment). Each stage is its own
    consumer group, so workers running different stages split the work by stage, and workers
    running the same stage split its partitions."""
    processes: Literal["auto", 1, 2] = "auto"
    """`crm-guard run`: 2 runs the record stage, about half of an event's CPU, in a second process
    (app/runtime/record_process.py); `auto` does so on a machine with two cores or more when the
    worker runs every stage; 1 keeps one process."""
    session_timeout_ms: int = Field(default=10_000, ge=3_000)
    """Consumer-group session (and rebalance) timeout of every group consumer, Faust's included.
    A broker holds a new group's first JoinGroup to let more members come (tansu: half this
    timeout, so Faust's default 60 s made the demo wait 30 s before it started); `run`/`demo` on
    the embedded tansu use 6000."""
    model_checkpoint_s: float = 60.0
    """At most how often an agent's activity_anomaly model is checkpointed to the actor changelog
    (seconds of wall time; also on stop and on revocation). Negative: never (models warm up again
    after every restart)."""
    max_payload_bytes: int = Field(default=1_000_000, gt=0)
    max_delivery_bytes: int = Field(default=16_000_000, gt=0)
    """Largest webhook body the receiver takes (413 above). A HubSpot batch of 100 notifications with
    long text values can pass `max_payload_bytes`: such a batch is split into one raw message per
    notification, so no raw message is larger than `max_payload_bytes` (Kafka's default limit is 1 MB)."""
    hubspot_client_secret: SecretStr | None = None
    pipedrive_user: str | None = None
    pipedrive_password: SecretStr | None = None
    salesforce_token: SecretStr | None = None
    salesforce_instance_url: str | None = None
    """The org's My Domain URL (https://yourorg.my.salesforce.com): where `crm-guard salesforce
    subscribe` (app/salesforce_cdc/) reads Change Data Capture events from."""
    salesforce_access_token: SecretStr | None = None
    salesforce_client_id: str | None = None
    """With `salesforce_client_secret`: a connected app's client-credentials flow, which gets (and
    renews) the subscriber's access token instead of a fixed `salesforce_access_token`."""
    salesforce_client_secret: SecretStr | None = None
    salesforce_channels: list[str] = Field(default_factory=lambda: ["/data/ChangeEvents"], min_length=1)
    """CDC channels to subscribe to: `/data/ChangeEvents` (every selected object) or per-object ones
    such as `/data/AccountChangeEvent`, or a custom channel `/data/<Name>__chn`."""
    salesforce_api_version: str = "62.0"
    pause_private_key_file: str | None = None
    pause_key_id: str = "guard-1"
    slack_webhook_url: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    show_pii: bool = False
    api_token: SecretStr | None = None
    """Bearer token the HTTP API requires for every change it makes (review decisions, batch
    approvals, autonomy pins, agent resumes; app/web/auth.py). Unset: those are open to anyone
    who reaches the port, agents included."""
    api_users_file: str | None = None
    """A file of named users, each with a token and a role (reviewer or operator), written by
    `crm-guard users add` (app/web/users.py): decisions record the token holder's name. Re-read
    when it changes. Works beside `api_token` or instead of it."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)

    @field_validator("salesforce_channels", mode="before")
    @classmethod
    def _channel_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for channel in value:
                if not isinstance(channel, str) or not channel.startswith("/data/") or " " in channel:
                    raise ValueError(f"{str(channel)[:80]!r} is not a Change Data Capture channel "
                                     "(/data/ChangeEvents, /data/AccountChangeEvent, /data/Name__chn)")
        return value

    @field_validator("processes", mode="before")
    @classmethod
    def _process_count(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError("a stage is named twice")
        return value

    @model_validator(mode="after")
    def _tls_needs_a_certificate(self) -> "Settings":
        if (self.web_tls_keyfile or self.web_tls_client_cafile) and not self.web_tls_certfile:
            raise ValueError("web_tls_keyfile and web_tls_client_cafile need web_tls_certfile (the server's certificate)")
        return self

    def with_overrides(self, **changes: Any) -> "Settings":
        """A copy with some fields replaced (validated)."""
        return Settings.model_validate({**self.model_dump(), **changes})


class SettingsError(ValueError):
    """The configuration is wrong; the message names the bad key."""


def load_settings(env: Mapping[str, str] | None = None, file: str | None = None) -> Settings:
    """Settings from a YAML file (CRM_GUARD_CONFIG or `file`) overlaid by CRM_GUARD_* variables."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = file or env.get("CRM_GUARD_CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:  # one line, like the policy file's: where, and what is wrong
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise SettingsError(f"config file {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"config file {path}: expected a mapping at the top level")
        data.update(loaded or {})
    topics = dict(data.get("topics") or {})
    for name, value in env.items():
        if not name.startswith("CRM_GUARD_") or name == "CRM_GUARD_CONFIG":
            continue
        key = name[len("CRM_GUARD_"):].lower()
        if key.startswith("topic_"):
            topics[key[len("topic_"):]] = value
        elif key in Settings.model_fields:
            data[key] = value
    if topics:
        data["topics"] = topics
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad key and what is wrong with it."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)
