"""Shared by the review API/CLI and browser tests: a started ReviewService on fresh topics of the
real broker, served by an aiohttp TestServer exactly as the guard serves it (add_routes)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.config import Settings, Topics
from app.review.service import ReviewService
from app.web.auth import operator_auth, whoami
from app.web.keys import REVIEW, SETTINGS, USERS
from app.web.review import add_routes
from app.web.users import UsersFile
from detectors.events import Actor, ActorKind, ChangeEvent, FieldChange, ObjectType, SourceIdentity
from detectors.policy import AgentPolicy, Autonomy, Policy, Tier

POLICY = Policy(agents={
    "enricher": AgentPolicy(autonomy={Tier.LOW: Autonomy.PROPOSE, Tier.MEDIUM: Autonomy.PROPOSE},
                            allowed_fields=["jobtitle", "phone", "lifecyclestage", "city", "dealstage"]),
    "scorer": AgentPolicy(autonomy={Tier.MEDIUM: Autonomy.PROPOSE}),
})

CURRENT = {("hubspot/contact/101", "jobtitle"): "Engineer", ("hubspot/contact/102", "jobtitle"): "Analyst",
           ("hubspot/contact/103", "lifecyclestage"): "lead"}


def current_value(record_key: str, field: str) -> Any:
    """Record state stand-in for the lead's RecordState.value_of: unknown fields raise KeyError."""
    return CURRENT[(record_key, field)]


def make_settings(bootstrap: str, unique: str) -> Settings:
    topics = Topics(proposals=f"crm.proposals.{unique}", approved=f"crm.approved.{unique}",
                    feedback=f"guard.feedback.{unique}", decisions=f"guard.decisions.{unique}",
                    deadletter=f"guard.deadletter.{unique}")
    return Settings(bootstrap_servers=bootstrap, group_id=f"review-e2e-{unique}", topics=topics)


async def create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        t = settings.topics
        await admin.create_topics([NewTopic(name, 1, 1) for name in (t.approved, t.feedback, t.deadletter)])
    finally:
        await admin.close()


def proposal(pid: str, record_id: str, fields: dict[str, Any], *, agent: str = "enricher",
             obj: ObjectType = ObjectType.CONTACT, reason: str = "title on the company site",
             evidence: Any = None, confidence: float | None = 0.9, age_ms: int = 3_600_000) -> dict[str, Any]:
    at = int(time.time() * 1000) - age_ms
    change = ChangeEvent(
        event_id=f"ev-{pid}", source="hubspot", source_event_id=f"s-{pid}", occurred_at=at, object_type=obj,
        source_object_type=obj.value, record_id=record_id, operation="update",
        changes=tuple(FieldChange(field=k, new=v) for k, v in fields.items()),
        actor=Actor(kind=ActorKind.AGENT, id=agent, identity=SourceIdentity(vendor="hubspot", app_id="1")),
    )
    return {"proposal_id": pid, "agent": agent, "change": change.model_dump(mode="json"), "reason": reason,
            "evidence": evidence if evidence is not None else {"activity": "email-31", "url": "https://example.org/team"},
            "confidence": confidence, "proposed_at": at}


SEED = [
    proposal("p-101", "101", {"jobtitle": "CTO"}),
    proposal("p-102", "102", {"jobtitle": "Head of Data"}),
    proposal("p-104", "104", {"jobtitle": "COO"}, confidence=None, evidence=["call on Monday"]),
    proposal("p-103", "103", {"lifecyclestage": "customer"}, reason="signed order form"),
    proposal("p-105", "105", {"phone": "+47 2222 3333", "city": "Oslo"}),
    proposal("p-201", "201", {"lifecyclestage": "opportunity"}, agent="scorer"),
]


@asynccontextmanager
async def review_server(bootstrap: str, unique: str, seed: list[dict[str, Any]] | None = None,
                        api_token: str | None = None, users_file: Path | None = None,
                        **service_kw: Any) -> AsyncIterator[tuple[ReviewService, TestClient]]:
    """A started service with `seed` submitted, and a client of a real HTTP server in front of it
    (with the guard's token middleware; `api_token` sets the shared token it wants, `users_file`
    its named users, and serves /api/whoami)."""
    settings = make_settings(bootstrap, unique)
    if api_token is not None:
        settings = settings.with_overrides(api_token=api_token)
    await create_topics(settings)
    service = ReviewService(settings, POLICY, current_value=current_value, **service_kw)
    await service.start()
    app = web.Application(middlewares=[operator_auth])
    app[REVIEW] = service
    app[SETTINGS] = settings
    if users_file is not None:
        app[USERS] = UsersFile(users_file)
    app.router.add_get("/api/whoami", whoami)
    add_routes(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        for item in SEED if seed is None else seed:
            await service.submit(item)
        yield service, client
    finally:
        await client.close()
        await service.stop()
