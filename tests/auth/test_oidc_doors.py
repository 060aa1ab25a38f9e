"""OIDC JWTs through a running service's two doors, with the identity provider configured.

Every forgery of test_oidc.py (expired, wrong issuer or audience, ``alg: none``, HS256 signed with
the RSA public key, algorithm/key mismatches, garbage, ...) sent to profile-svc over HTTP and over
``mailwarden.rpc.profile-svc.list``: 401 every time, never a 500 and never an acceptance. The
provider's own token passes both doors. With the provider's JWKS on a denied address, a token is
answered 503 (the keys cannot be had), never accepted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import NatsServer

from .auth_helpers import AUDIENCE, ISSUER, IdentityProvider, identity_provider
from .test_oidc import _forgeries


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with identity_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def own_nats(workdir: Path) -> Iterator[str]:
    """A NATS of this module alone: no other profile-svc answers its request-reply subjects."""
    with NatsServer(workdir / f"nats-oidc-{uuid.uuid4().hex[:8]}") as server:
        yield server.url


@asynccontextmanager
async def profile_svc(
    nats_url: str, mongo_uri: str, idp: IdentityProvider, allow: str
) -> AsyncIterator[FastAPI]:
    from profile_svc.app import create_app

    env = {
        "MW_NATS_URL": nats_url,
        "MW_MONGODB_URI": mongo_uri,
        "MW_MONGODB_DB": f"t_{uuid.uuid4().hex[:12]}",
        "MW_LOG_SETUP": "false",
        "MW_PROFILE_CREDENTIAL_KEYS": KeyRing.generate_key_text("cred1"),
        "MW_TRANSIT_KEYS": KeyRing.generate_key_text("transit1"),
        "MW_AUTH_OIDC_ISSUER": ISSUER,
        "MW_AUTH_OIDC_AUDIENCE": AUDIENCE,
        "MW_AUTH_OIDC_JWKS_URL": idp.url,
        "MW_AUTH_JWKS_ALLOW_NETWORKS": allow,
        "MW_AUTH_JWKS_TIMEOUT_S": "2",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        app = create_app()
        async with app.router.lifespan_context(app):
            yield app


async def _both_doors(app: FastAPI, nats_url: str, token: str) -> tuple[int, int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        http = (await client.get("/profiles", headers=bearer_header(token))).status_code
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.request(
            "mailwarden.rpc.profile-svc.list", b"{}", timeout=10, headers=bearer_header(token)
        )
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    return http, 200 if reply.get("ok") else int(reply["status"])


async def test_every_forged_jwt_is_401_on_both_doors_and_the_good_one_passes(
    own_nats: str, mongo_uri: str, idp: IdentityProvider
) -> None:
    async with profile_svc(own_nats, mongo_uri, idp, allow="127.0.0.1/32") as app:
        assert await _both_doors(app, own_nats, idp.token()) == (200, 200)
        answers = {name: await _both_doors(app, own_nats, token) for name, token in _forgeries(idp).items()}
    assert answers == dict.fromkeys(_forgeries(idp), (401, 401))
    assert len(answers) == 19


async def test_a_provider_on_a_denied_address_makes_tokens_503_never_accepted(
    own_nats: str, mongo_uri: str, idp: IdentityProvider
) -> None:
    before = idp.connections
    async with profile_svc(own_nats, mongo_uri, idp, allow="") as app:
        assert await _both_doors(app, own_nats, idp.token()) == (503, 503)
    assert idp.connections == before
