"""Named API users: the users file (parse, edit, re-read) and what the auth middleware does with it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.config import Settings
from app.metrics import GuardMetrics
from app.web import users as users_module
from app.web.auth import API_USER, decided_by, operator_auth, whoami
from app.web.keys import METRICS, SETTINGS, USERS
from app.web.users import ApiUser, UsersFile, UsersFileError, add_user, digest, parse_users, read_users, remove_user

DIGEST = digest("t-1")


def test_a_file_parses_with_comments_and_blank_lines() -> None:
    text = f"# who\n\nann@acme.io reviewer {DIGEST}  # Ann\nops operator {digest('t-2')}\n"
    assert [(u.name, u.role) for u in parse_users(text)] == [("ann@acme.io", "reviewer"), ("ops", "operator")]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"ann reviewer {DIGEST} extra", "users:1: expected `name role sha256:<hex>`, got 4 words"),
        (f"\nann admin {DIGEST}", "users:2: role 'admin' is not one of reviewer, operator"),
        ("ann reviewer 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8", "sha256:<64 hex digits>"),
        ("ann reviewer sha256:abc", "sha256:<64 hex digits>"),
        (f"-ann reviewer {DIGEST}", "bad name '-ann'"),
        (f"ann reviewer {DIGEST}\nann operator {digest('x')}", "users:2: ann is listed twice"),
        (f"ann reviewer {DIGEST}\nbob operator {DIGEST}", "users:2: bob has the same token as another user"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(text: str, problem: str) -> None:
    with pytest.raises(UsersFileError) as err:
        parse_users(text, "users")
    assert problem in str(err.value)


def test_add_list_remove_keep_only_digests_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "users"
    token = add_user(path, "ann@acme.io", "reviewer")
    add_user(path, "ops", "operator")
    assert token.startswith("cgu_") and len(token) > 40
    text = path.read_text()
    assert token not in text and digest(token) in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [(u.name, u.role) for u in read_users(path)] == [("ann@acme.io", "reviewer"), ("ops", "operator")]
    with pytest.raises(UsersFileError, match="already a user"):
        add_user(path, "ops", "reviewer")
    with pytest.raises(UsersFileError, match="bad name"):
        add_user(path, "two words", "reviewer")
    with pytest.raises(UsersFileError, match="not one of"):
        add_user(path, "carl", "admin")
    remove_user(path, "ops")
    assert [u.name for u in read_users(path)] == ["ann@acme.io"]
    with pytest.raises(UsersFileError, match="no user named ops"):
        remove_user(path, "ops")
    assert not [p for p in path.parent.iterdir() if p.name != "users"]  # no temporary files left


def test_the_server_rereads_a_changed_file_and_keeps_the_last_good_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users_module, "RELOAD_EVERY_S", 0.0)
    path = tmp_path / "users"
    ann = add_user(path, "ann", "reviewer")
    users = UsersFile(path)
    assert users.lookup(ann) == ApiUser("ann", "reviewer")
    bob = add_user(path, "bob", "operator")
    assert users.lookup(bob) == ApiUser("bob", "operator")  # added without a restart
    remove_user(path, "ann")
    assert users.lookup(ann) is None  # revoked without a restart
    path.write_text("bob operator not-a-digest\n")
    assert users.lookup(bob) == ApiUser("bob", "operator")  # broken edit: the last good list stays
    with pytest.raises(UsersFileError):
        UsersFile(tmp_path / "missing")


def test_roles_are_ordered() -> None:
    assert ApiUser("a", "operator").may("reviewer") and ApiUser("a", "operator").may("operator")
    assert ApiUser("a", "reviewer").may("reviewer") and not ApiUser("a", "reviewer").may("operator")


# ---- the middleware ---------------------------------------------------------------------------------


async def who(request: web.Request) -> web.Response:
    user = request.get(API_USER)
    return web.json_response({"by": decided_by(request, "typed-name"), "role": user.role if user else None})


async def client_with(tmp_path: Path, api_token: str | None, metrics: GuardMetrics) -> tuple[TestClient, dict[str, str]]:
    path = tmp_path / "users"
    tokens = {"ann": add_user(path, "ann", "reviewer"), "ops": add_user(path, "ops", "operator")}
    app = web.Application(middlewares=[operator_auth])
    app[SETTINGS] = Settings(api_token=api_token)
    app[USERS] = UsersFile(path)
    app[METRICS] = metrics
    app.router.add_post("/api/review/proposals/{id}/approve", who)
    app.router.add_post("/api/review/batch-approve", who)
    app.router.add_post("/api/agents/{agent}/pin", who)
    app.router.add_post("/api/agents/{agent}/resume", who)
    app.router.add_get("/api/whoami", whoami)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client, tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_reviewer_decides_proposals_but_cannot_resume_or_pin(tmp_path: Path) -> None:
    metrics = GuardMetrics()
    client, tokens = await client_with(tmp_path, "shared-op", metrics)
    try:
        done = await client.post("/api/review/proposals/p-1/approve", headers=bearer(tokens["ann"]))
        assert done.status == 200 and await done.json() == {"by": "ann", "role": "reviewer"}  # not "typed-name"
        assert (await client.post("/api/review/batch-approve", headers=bearer(tokens["ann"]))).status == 200
        for path in ("/api/agents/bot/resume", "/api/agents/bot/pin"):
            refused = await client.post(path, headers=bearer(tokens["ann"]))
            body = await refused.json()
            assert refused.status == 403 and body["error"] == "forbidden_role"
            assert "ann is a reviewer" in body["message"] and "operator" in body["message"]
        ops = await client.post("/api/agents/bot/resume", headers=bearer(tokens["ops"]))
        assert ops.status == 200 and (await ops.json())["by"] == "ops"
        shared = await client.post("/api/agents/bot/resume", headers=bearer("shared-op"))
        assert shared.status == 200 and (await shared.json()) == {"by": "typed-name", "role": None}
        wrong = await client.post("/api/review/proposals/p-1/approve", headers=bearer(tokens["ann"] + "x"))
        assert wrong.status == 401 and (await wrong.json())["error"] == "wrong_token"
        assert metrics.registry.get_sample_value("crm_guard_api_refused_total", {"reason": "forbidden_role"}) == 2
    finally:
        await client.close()


async def test_a_users_file_alone_protects_the_api(tmp_path: Path) -> None:
    client, tokens = await client_with(tmp_path, None, GuardMetrics())
    try:
        missing = await client.post("/api/review/proposals/p-1/approve")
        assert missing.status == 401 and (await missing.json())["error"] == "missing_token"
        assert (await client.post("/api/review/proposals/p-1/approve", headers=bearer(tokens["ann"]))).status == 200
    finally:
        await client.close()


async def test_whoami_names_the_token_holder(tmp_path: Path) -> None:
    client, tokens = await client_with(tmp_path, "shared-op", GuardMetrics())
    try:
        ann = await client.get("/api/whoami", headers=bearer(tokens["ann"]))
        assert await ann.json() == {"user": "ann", "role": "reviewer", "open": False}
        shared = await client.get("/api/whoami", headers=bearer("shared-op"))
        assert await shared.json() == {"user": None, "role": "operator", "open": False}
        nobody = await client.get("/api/whoami", headers=bearer("guess"))
        assert nobody.status == 401 and (await nobody.json())["error"] == "wrong_token"
        assert (await client.get("/api/whoami")).status == 401
    finally:
        await client.close()


async def test_whoami_on_an_open_guard() -> None:
    app = web.Application(middlewares=[operator_auth])
    app[SETTINGS] = Settings()
    app.router.add_get("/api/whoami", whoami)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        assert await (await client.get("/api/whoami")).json() == {"user": None, "role": None, "open": True}
    finally:
        await client.close()


def test_the_guards_web_app_loads_the_users_file(tmp_path: Path) -> None:
    """build_web_app (what `crm-guard run` serves) reads api_users_file."""
    from app.web.server import build_web_app
    from detectors.policy import Policy

    path = tmp_path / "users"
    add_user(path, "ann", "reviewer")
    app = build_web_app({"settings": Settings(api_users_file=str(path)), "policy": Policy(), "runtime": None})
    assert isinstance(app[USERS], UsersFile) and app[USERS].path == path
