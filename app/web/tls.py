"""HTTPS for the worker's web server, and client certificates (mTLS) for webhook callers.

Vendors deliver webhooks only to https URLs. With `web_tls_certfile` (and `web_tls_keyfile`) the
server speaks TLS itself; otherwise put it behind a proxy that does. With `web_tls_client_cafile`
a caller may present a certificate signed by that CA: the handshake asks for one but does not
require it (HubSpot and Pipedrive present none), and a route that accepts certificates
(/webhooks/salesforce) checks that the connection carried a verified one.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiohttp import web


def server_ssl_context(settings: Any) -> ssl.SSLContext | None:
    """The web server's TLS context, or None for plain HTTP. Raises OSError/ssl.SSLError on bad files."""
    if not settings.web_tls_certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.web_tls_certfile, settings.web_tls_keyfile)
    if settings.web_tls_client_cafile:
        context.load_verify_locations(cafile=settings.web_tls_client_cafile)
        context.verify_mode = ssl.CERT_OPTIONAL  # asked for, verified when given, required per route
    return context


def client_certificate_subject(request: web.Request) -> str | None:
    """The verified client certificate's subject (e.g. `CN=sf-bridge`) of this connection, or None.

    With CERT_OPTIONAL the TLS layer only hands over a certificate that verified against the
    client CA; a connection without one (or plain HTTP) gives None.
    """
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is None:
        return None
    peer = transport.get_extra_info("peercert")
    if not peer:
        return None
    parts = [f"{key}={value}" for rdn in peer.get("subject", ()) for key, value in rdn]
    return ",".join(parts) or "(no subject)"
