"""The machine-facing error middlewares (app/web/errors.py) over HTTP: an /api/ change that Kafka
does not acknowledge in time answers 503 and goes on in the background; reads are never cut;
a handler's own failures keep their answers."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaTimeoutError

from app.web import errors


def slow_app(acknowledged: asyncio.Event, finished: list[str]) -> web.Application:
    async def write(request: web.Request) -> web.Response:
        await request.json()
        await acknowledged.wait()  # the broker's acknowledgement of the write
        finished.append("write")
        return web.json_response({"status": "done"})

    async def read(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.json_response({"status": "read"})

    async def own_timeout(request: web.Request) -> web.Response:
        raise TimeoutError("a handler's own timeout")

    async def refused(request: web.Request) -> web.Response:
        raise KafkaTimeoutError()

    app = web.Application(middlewares=[errors.json_errors, errors.broker_errors])
    app.router.add_post("/api/write", write)
    app.router.add_get("/api/read", read)
    app.router.add_post("/api/own-timeout", own_timeout)
    app.router.add_post("/api/refused", refused)
    return app


async def test_an_unacknowledged_api_write_answers_503_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "API_WRITE_WAIT_S", 0.2)
    acknowledged, finished = asyncio.Event(), []
    client = TestClient(TestServer(slow_app(acknowledged, finished), host="127.0.0.1"))
    await client.start_server()
    try:
        answer = await client.post("/api/write", json={"decision": "approve"})
        assert answer.status == 503 and answer.headers["Retry-After"] == "30"
        body = await answer.json()
        assert body["error"] == "broker_unavailable" and "check the state before retrying" in body["message"]
        assert finished == []
        acknowledged.set()  # the broker comes back: the write completes after all
        for _ in range(50):
            if finished:
                break
            await asyncio.sleep(0.02)
        assert finished == ["write"]

        read = await client.get("/api/read")  # longer than the write limit, but a read: not cut
        assert read.status == 200

        own = await client.post("/api/own-timeout", json={})
        assert own.status == 500 and (await own.json())["error"] == "internal_error"
        refused = await client.post("/api/refused", json={})
        assert refused.status == 503 and (await refused.json())["error"] == "broker_unavailable"
    finally:
        await client.close()
