"""Asking for the client's certificate after the handshake (docs/beyond.rst)."""

from __future__ import annotations

import ssl
from typing import Any

from trio_tlsretry import TLSStream


def allow_post_handshake_auth(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    *,
    client_ca: str = "client-ca.pem",
    client_cert: str = "client.pem",
) -> None:
    server_context.post_handshake_auth = True  # and: no request during the handshake
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_verify_locations(client_ca)

    client_context.post_handshake_auth = True
    client_context.load_cert_chain(client_cert)  # the certificate and its key


async def client_certificate(stream: TLSStream) -> Any:
    """On the server, once the client asks for something protected."""
    await stream.verify_client_post_handshake()
    return stream.getpeercert()
