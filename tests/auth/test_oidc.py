"""OIDC JWTs against a real JWKS endpoint: the good token passes, every forgery is a 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mailwarden_runtime.auth import AuthSettings, Role, Unauthenticated
from mailwarden_runtime.auth.errors import AuthUnavailable
from mailwarden_runtime.auth.oidc import OidcVerifier

from .auth_helpers import AUDIENCE, ISSUER, IdentityProvider, identity_provider


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with identity_provider() as provider:
        yield provider


def _verifier(idp: IdentityProvider, **over: object) -> OidcVerifier:
    settings = AuthSettings.model_validate(
        {
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": idp.url,
            "jwks_allow_networks": "127.0.0.0/8",  # the local provider, allowed explicitly
        }
        | over
    )
    return OidcVerifier(settings)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_a_good_token_gives_subject_roles_and_mailboxes(idp: IdentityProvider) -> None:
    verifier = _verifier(idp)
    try:
        token = idp.token(sub="alice", mailwarden_roles="mailbox_owner unknown", mailwarden_mailboxes=["q1"])
        principal = await verifier.verify(token)
        assert principal.subject == "alice"
        assert principal.roles == frozenset({Role.MAILBOX_OWNER})
        assert principal.mailboxes == frozenset({"q1"})
        assert principal.actor == "jwt:alice"
        ec = await verifier.verify(idp.token(alg="ES256", kid="ec1"))
        assert ec.roles == frozenset({Role.SYSTEM_ADMIN})
    finally:
        await verifier.close()


def _hs256(claims: dict[str, object], secret: bytes) -> str:
    """What an attacker builds by hand (PyJWT refuses to sign HS256 with a PEM key)."""
    signing_input = _b64({"alg": "HS256", "typ": "JWT", "kid": "rsa1"}) + "." + _b64(claims)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _tampered(token: str, claims: dict[str, object]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{_b64(claims)}.{signature}"


def _forgeries(idp: IdentityProvider) -> dict[str, str]:
    now = int(time.time())
    claims = idp.claims()
    return {
        "expired": idp.token(exp=now - 120, iat=now - 600, nbf=now - 600),
        "not yet valid": idp.token(nbf=now + 600),
        "wrong issuer": idp.token(iss="https://evil.example/"),
        "wrong audience": idp.token(aud="someone-else"),
        "no subject": idp.token(sub=None),
        "no expiry": idp.token(exp=None),
        "alg none": _b64({"alg": "none", "typ": "JWT", "kid": "rsa1"}) + "." + _b64(claims) + ".",
        "alg none, no signature part": _b64({"alg": "none"}) + "." + _b64(claims),
        # HS/RS confusion: the public key's PEM used as an HMAC secret
        "HS256 with the public key": _hs256(claims, idp.rsa_public_pem()),
        "ES256 claimed on the RSA key": idp.token(alg="ES256", kid="rsa1"),
        "RS256 claimed on the EC key": jwt.encode(
            claims, idp.rsa_key, algorithm="RS256", headers={"kid": "ec1"}
        ),
        "unknown kid": idp.token(kid="nope"),
        "tampered payload": _tampered(idp.token(), claims | {"sub": "root"}),
        "signed by another key": jwt.encode(
            claims, rsa.generate_private_key(65537, 2048), algorithm="RS256", headers={"kid": "rsa1"}
        ),
        "garbage": "not.a.jwt",
        "garbage base64": "eyJhbGciOi.eyJzdWIi.AAAA",
        "empty header json": _b64({}) + "." + _b64(claims) + ".sig",
        "header not an object": base64.urlsafe_b64encode(b"[1,2]").decode() + "." + _b64(claims) + ".x",
        "huge kid": jwt.encode(claims, idp.rsa_key, algorithm="RS256", headers={"kid": "k" * 5000}),
    }


async def test_every_forgery_is_refused_with_401(idp: IdentityProvider) -> None:
    verifier = _verifier(idp)
    refused: dict[str, str] = {}
    try:
        for name, token in _forgeries(idp).items():
            with pytest.raises(Unauthenticated) as info:
                await verifier.verify(token)
            refused[name] = info.value.detail
    finally:
        await verifier.close()
    assert refused["expired"] == "token expired"
    assert refused["alg none"] == refused["HS256 with the public key"] == "token algorithm not allowed"
    assert refused["ES256 claimed on the RSA key"] == "token algorithm does not fit its key"
    assert refused["wrong audience"] == refused["wrong issuer"] == "token does not verify"


async def test_algorithms_outside_the_allow_list_are_refused(idp: IdentityProvider) -> None:
    verifier = _verifier(idp, oidc_algorithms=["ES256"])
    try:
        with pytest.raises(Unauthenticated, match="algorithm not allowed"):
            await verifier.verify(idp.token())
    finally:
        await verifier.close()
    for bad in (["none"], ["HS256"], ["RS256", "HS512"], []):
        with pytest.raises(ValueError):
            AuthSettings.model_validate({"oidc_algorithms": bad})


async def test_keys_are_cached_and_refetched_for_a_new_kid_at_most_every_30s(idp: IdentityProvider) -> None:
    verifier = _verifier(idp)
    try:
        before = idp.requests
        for _ in range(5):
            await verifier.verify(idp.token())
        assert idp.requests - before == 1
        for _ in range(5):  # unknown key ids do not hammer the provider
            with pytest.raises(Unauthenticated):
                await verifier.verify(idp.token(kid="rolled-over"))
        assert idp.requests - before == 1
    finally:
        await verifier.close()


async def test_an_unreachable_provider_is_unavailable_not_accepted() -> None:
    settings = AuthSettings.model_validate(
        {
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": "http://127.0.0.1:9/jwks.json",
            "jwks_allow_networks": "127.0.0.0/8",
            "jwks_timeout_s": 1,
        }
    )
    verifier = OidcVerifier(settings)
    with identity_provider() as other:
        token = other.token()
    try:
        with pytest.raises(AuthUnavailable):
            await verifier.verify(token)
    finally:
        await verifier.close()
