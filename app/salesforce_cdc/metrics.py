"""Prometheus metrics of the Salesforce subscriber (`crm-guard salesforce subscribe --metrics-port N`).

On-call needs to know that Salesforce changes are still being read: whether the subscriber holds a
session, when each channel last delivered, how often it had to handshake again and why, and
whether a resume point had expired (events lost at Salesforce). Labels are the configured
channels and a fixed set of reasons: bounded, no PII.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

HANDSHAKE_REASONS = ("start", "session_ended", "connection_error", "token_renewed")


class SubscriberMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "crm_guard_salesforce_events",
            "CDC events produced to the raw topic (acknowledged)",
            ["channel"],
            registry=self.registry,
        )
        self.handshakes = Counter(
            "crm_guard_salesforce_handshakes",
            "Streaming API sessions started, by why",
            ["reason"],
            registry=self.registry,
        )
        self.replay_gaps = Counter(
            "crm_guard_salesforce_replay_gaps",
            "Resume points Salesforce no longer retained: events between were lost",
            ["channel"],
            registry=self.registry,
        )
        self.connected = Gauge(
            "crm_guard_salesforce_connected",
            "1 while subscribed and polling Salesforce, 0 while (re)connecting",
            registry=self.registry,
        )
        self.last_event = Gauge(
            "crm_guard_salesforce_last_event_timestamp_seconds",
            "When Kafka acknowledged the channel's newest event (Unix time)",
            ["channel"],
            registry=self.registry,
        )
        for reason in HANDSHAKE_REASONS:
            self.handshakes.labels(reason)
