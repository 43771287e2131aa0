"""One aiohttp Application per worker, run as a mode.Service inside the Faust app.

Shared objects hang on the application under the AppKeys of app/web/keys.py (modules adding
routes read them): SETTINGS, POLICY, METRICS, BOARD, RUNTIME (producer once started), REVIEW and
TIMELINE (None in a worker without the actor stage); the pages also read ALERTS, TRUST, SHOW_PII.
Route modules: app/web/api.py (health, metrics, alerts, agents), app/web/receiver.py (vendor
webhooks), and those listed in ROUTE_MODULES.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from aiohttp import web
from mode import Service

from app.web.auth import operator_auth
from app.web.errors import body_limit, broker_errors, json_errors
from app.web.keys import BY_NAME
from app.web.tls import server_ssl_context
from app.web.users import UsersFile

log = logging.getLogger(__name__)

ROUTE_MODULES: list[str] = ["app.web.api", "app.web.receiver", "app.web.review", "app.web.timeline"]


def build_web_app(shared: dict[str, Any]) -> web.Application:
    """The application with every route module's routes and the shared objects attached."""
    settings = shared["settings"]
    largest = max(int(settings.max_payload_bytes), int(settings.max_delivery_bytes))
    api_limit = body_limit(int(settings.max_payload_bytes) + 1024)
    application = web.Application(client_max_size=largest + 1024,
                                  middlewares=[json_errors, api_limit, operator_auth, broker_errors])
    for name, value in shared.items():
        application[BY_NAME[name]] = value
    users_file = shared["settings"].api_users_file
    if users_file and "users" not in shared:
        application[BY_NAME["users"]] = UsersFile(users_file)  # UsersFileError: `run` checked it first
    for name in ROUTE_MODULES:
        importlib.import_module(name).add_routes(application)
    return application


class WebServer(Service):
    """Serves the application on settings.web_host:web_port for the worker's lifetime."""

    def __init__(self, shared: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shared = shared
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    async def on_start(self) -> None:
        settings = self.shared["settings"]
        self.runner = web.AppRunner(build_web_app(self.shared), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, settings.web_host, settings.web_port, ssl_context=server_ssl_context(settings))
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001
        self.port = sockets[0].getsockname()[1] if sockets else settings.web_port
        log.info("web server on %s", self.web_url)

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def web_url(self) -> str:
        settings = self.shared["settings"]
        scheme = "https" if settings.web_tls_certfile else "http"
        return f"{scheme}://{settings.web_host}:{self.port or settings.web_port}"
