"""A real identity provider for the tests: signing keys, a JWKS served over HTTP, token minting."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.test/"
AUDIENCE = "mailwarden"


@dataclass
class IdentityProvider:
    """Keys ``rsa1`` (RSA) and ``ec1`` (EC P-256), published as a JWKS at ``url``."""

    url: str = ""
    port: int = 0
    rsa_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    requests: int = 0
    connections: int = 0
    """TCP connections accepted, counted before any request is read (a refused fetch makes none)."""
    extra_keys: list[dict[str, Any]] = field(default_factory=list)

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return {
            "keys": [
                rsa_jwk | {"kid": "rsa1", "use": "sig"},
                ec_jwk | {"kid": "ec1", "use": "sig"},
                *self.extra_keys,
            ]
        }

    def rsa_public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-admin",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "mailwarden_roles": ["system_admin"],
        }
        return {k: v for k, v in (base | over).items() if v is not None}

    def token(self, alg: str = "RS256", kid: str = "rsa1", **claims: Any) -> str:
        key: Any = self.rsa_key if alg.startswith(("RS", "PS")) else self.ec_key
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers={"kid": kid})


@contextmanager
def identity_provider() -> Iterator[IdentityProvider]:
    idp = IdentityProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.requests += 1
            body = json.dumps(idp.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            idp.connections += 1
            return True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    idp.port = int(server.server_address[1])
    idp.url = f"http://127.0.0.1:{idp.port}/jwks.json"
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
