"""Sign-in with the organisation's OpenID Connect provider: authorization code + PKCE (S256).

The console is the OAuth client: it sends the browser to the provider's authorization endpoint
with a fresh ``state``, ``nonce`` and PKCE challenge (kept sealed in a short-lived cookie), takes
the code back at ``/signin/oidc/callback``, exchanges it with the verifier at the token endpoint,
checks the ID token (signature from the provider's JWKS, asymmetric algorithms only, ``iss``,
``aud`` = our client id, ``exp``, ``nonce``) and keeps the access token as the session's bearer
token: the services verify that one themselves (``MW_AUTH_OIDC_*``) on every call.

Every call to the provider (discovery, token endpoint, JWKS) passes the one egress policy
(:mod:`mailwarden_runtime.egress`): it connects to a checked address only, public unless the
operator allows the provider's range in ``MW_CONSOLE_OIDC_ALLOW_NETWORKS``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from mailwarden_console.config import ConsoleSettings
from mailwarden_runtime.auth.jwks import JwksCache
from mailwarden_runtime.auth.oidc import KEY_TYPE_OF
from mailwarden_runtime.auth.settings import ALLOWED_ALGORITHMS
from mailwarden_runtime.egress.errors import NetError
from mailwarden_runtime.egress.http import HostLimiter, HttpEgress, HttpReply, UrlRefused, parse_target
from mailwarden_runtime.egress.policy import EgressPolicy
from mailwarden_runtime.egress.resolve import Resolver, SystemResolver

log = logging.getLogger(__name__)
DISCOVERY_TTL_S = 300.0
FLOW_MAX_AGE_S = 600
"""A sign-in must come back from the provider within this long."""
MAX_BODY = 256 * 1024
ALLOW_SETTING = "MW_CONSOLE_OIDC_ALLOW_NETWORKS"


class OidcError(Exception):
    """The provider refused or answered something we cannot trust: shown on the sign-in page."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None
    """RP-initiated logout, when the provider offers it: signing out here signs out there too."""


@dataclass(frozen=True)
class Flow:
    """One sign-in under way: what the callback must see again (sealed in a cookie meanwhile)."""

    state: str
    nonce: str
    verifier: str
    next_url: str
    redirect_uri: str
    started_at: float

    @classmethod
    def begin(cls, next_url: str, redirect_uri: str) -> Flow:
        return cls(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next_url=next_url,
            redirect_uri=redirect_uri,
            started_at=time.time(),
        )

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @property
    def expired(self) -> bool:
        return time.time() - self.started_at > FLOW_MAX_AGE_S


@dataclass(frozen=True)
class SignedIn:
    access_token: str
    subject: str
    expires_at: float | None


class OidcClient:
    def __init__(self, settings: ConsoleSettings, resolver: Resolver | None = None) -> None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            raise ValueError("OIDC sign-in needs MW_CONSOLE_OIDC_ISSUER and MW_CONSOLE_OIDC_CLIENT_ID")
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret
        scopes = settings.oidc_scopes.split()
        self.scopes = " ".join(["openid", *[s for s in scopes if s != "openid"]])
        self._timeout_s = settings.oidc_timeout_s
        self._allow = settings.oidc_networks
        self._resolver = resolver or SystemResolver()
        self._limiter = HostLimiter(per_host=4, overall=4)
        self._provider: Provider | None = None
        self._provider_at = 0.0
        self._jwks: JwksCache | None = None

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def provider(self) -> Provider:
        """The discovery document, cached; its ``issuer`` must be the configured one exactly."""
        if self._provider is not None and time.monotonic() - self._provider_at < DISCOVERY_TTL_S:
            return self._provider
        doc = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
        try:
            found = Provider(
                issuer=str(doc["issuer"]).rstrip("/"),
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                end_session_endpoint=str(doc["end_session_endpoint"])
                if doc.get("end_session_endpoint")
                else None,
            )
        except KeyError as exc:
            raise OidcError(f"the provider's discovery document has no {exc.args[0]}") from None
        if found.issuer != self.issuer:
            raise OidcError("the provider's discovery document names another issuer")
        if "S256" not in doc.get("code_challenge_methods_supported", ["S256"]):
            raise OidcError("the provider does not support PKCE with S256")
        if self._jwks is None or (self._provider and self._provider.jwks_uri != found.jwks_uri):
            if self._jwks is not None:
                await self._jwks.close()
            try:
                self._jwks = JwksCache(
                    found.jwks_uri,
                    ttl_s=DISCOVERY_TTL_S,
                    timeout_s=self._timeout_s,
                    allow_networks=self._allow,
                    allow_setting=ALLOW_SETTING,
                    resolver=self._resolver,
                )
            except UrlRefused:
                raise OidcError("the provider's jwks_uri is not an http(s) URL we may call") from None
        self._provider, self._provider_at = found, time.monotonic()
        return found

    async def authorization_url(self, flow: Flow) -> str:
        provider = await self.provider()
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": flow.redirect_uri,
            "scope": self.scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": flow.challenge,
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in provider.authorization_endpoint else "?"
        return f"{provider.authorization_endpoint}{sep}{urlencode(query)}"

    async def logout_url(self, after: str) -> str | None:
        """Where to send the browser to end the provider's session too (None: it has no such door)."""
        try:
            provider = await self.provider()
        except OidcError:
            return None
        if provider.end_session_endpoint is None:
            return None
        query = urlencode({"client_id": self.client_id, "post_logout_redirect_uri": after})
        sep = "&" if "?" in provider.end_session_endpoint else "?"
        return f"{provider.end_session_endpoint}{sep}{query}"

    async def finish(self, flow: Flow, code: str) -> SignedIn:
        """The code exchanged (with the PKCE verifier) and the ID token checked."""
        provider = await self.provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": flow.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": flow.verifier,
        }
        if self._secret is not None:
            form["client_secret"] = self._secret.get_secret_value()
        resp = await self._call(
            "POST",
            provider.token_endpoint,
            urlencode(form).encode(),
            {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
            "the provider's token endpoint",
        )
        body = _json(resp)
        if resp.status != 200:
            reason = body.get("error_description") or body.get("error") or f"HTTP {resp.status}"
            raise OidcError(f"the provider refused the sign-in: {reason}")
        access, id_token = body.get("access_token"), body.get("id_token")
        if not isinstance(access, str) or not access or not isinstance(id_token, str):
            raise OidcError("the provider answered without an access token and an ID token")
        claims = await self._verify_id_token(provider, id_token, flow.nonce)
        expires_in = body.get("expires_in")
        expires_at = time.time() + float(expires_in) if isinstance(expires_in, int | float) else None
        return SignedIn(access_token=access, subject=str(claims["sub"]), expires_at=expires_at)

    async def _verify_id_token(self, provider: Provider, token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise OidcError("the ID token does not parse") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise OidcError("the ID token's algorithm is not allowed (asymmetric only)")
        assert self._jwks is not None  # made with the provider
        kid = header.get("kid")
        jwk = await self._jwks.key(kid if isinstance(kid, str) else None)
        if jwk is None or jwk.get("kty") != KEY_TYPE_OF.get(alg[:2]) or jwk.get("alg", alg) != alg:
            raise OidcError("the ID token is not signed by a key of the provider")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=PyJWK(jwk, algorithm=alg).key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=provider.issuer,
                leeway=30,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except (PyJWTError, PyJWKError, ValueError, TypeError):
            raise OidcError("the ID token does not verify") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("the ID token is not for this sign-in (nonce)")
        return claims

    async def _get_json(self, url: str) -> dict[str, Any]:
        resp = await self._call("GET", url, b"", {"Accept": "application/json"}, "the identity provider")
        if resp.status != 200:
            raise OidcError(f"the identity provider answered {resp.status}")
        return _json(resp)

    async def _call(self, method: str, url: str, body: bytes, headers: dict[str, str], who: str) -> HttpReply:
        """One request through the egress policy; the port is the one the URL names."""
        try:
            port = parse_target(url).port
            egress = HttpEgress(
                EgressPolicy(self._allow, allowed_ports=(port,), allow_setting=ALLOW_SETTING),
                self._resolver,
                self._limiter,
                deadline_s=self._timeout_s,
                dns_timeout_s=self._timeout_s,
                max_response_bytes=MAX_BODY,
            )
            return await egress.request(method, url, body, headers)
        except UrlRefused:
            raise OidcError(f"{who} is not at an http(s) URL we may call") from None
        except NetError as exc:
            log.warning("%s did not answer: %s", who, exc)
            raise OidcError(f"{who} did not answer ({exc.code.value})") from None


def _json(resp: HttpReply) -> dict[str, Any]:
    if resp.truncated:
        raise OidcError("the identity provider's answer is too large")
    try:
        body = json.loads(resp.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
