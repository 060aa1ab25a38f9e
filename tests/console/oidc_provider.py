"""A small OpenID Connect provider for the console's tests: discovery, JWKS, authorize and token.

It does what the console relies on and checks what a real provider checks: registered client and
redirect URI, ``response_type=code``, PKCE with S256 (the verifier must hash to the challenge),
single-use codes that expire, RS256 tokens from an RSA key made with ``cryptography``. The
"login" is a form naming one of the provider's users, each with the claims the services read
(``mailwarden_roles``, ``mailwarden_mailboxes``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jwt.algorithms import RSAAlgorithm

CODE_TTL_S = 60


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: str
    issued_at: float


@dataclass
class LocalProvider:
    """Make it, put users in ``users``, serve ``app()``; ``issuer`` is set once it is served."""

    client_id: str = "mailwarden-console"
    audience: str = "mailwarden"
    redirect_uris: set[str] = field(default_factory=set)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    issuer: str = ""
    access_ttl_s: int = 600
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    codes: dict[str, Grant] = field(default_factory=dict)
    token_requests: int = 0
    logouts: list[str] = field(default_factory=list)
    """Clients whose users signed out here (RP-initiated logout)."""
    id_token_changes: dict[str, Any] = field(default_factory=dict)
    """Claims changed in the next ID tokens (a provider gone wrong, or an attacker's token)."""
    id_token_key: rsa.RSAPrivateKey | None = None
    """Sign ID tokens with this key instead (one the JWKS does not publish)."""
    access_audience: str | None = None
    """The ``aud`` of access tokens, when not ``audience`` (tokens meant for another API)."""

    def sign(self, claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def access_token(self, user: str, ttl_s: int | None = None) -> str:
        now = int(time.time())
        return self.sign(
            {
                "iss": self.issuer,
                "aud": self.access_audience or self.audience,
                "sub": user,
                "iat": now,
                "exp": now + (ttl_s if ttl_s is not None else self.access_ttl_s),
                **self.users[user],
            }
        )

    def app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "end_session_endpoint": f"{self.issuer}/logout",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "subject_types_supported": ["public"],
            }

        @app.get("/jwks")
        async def jwks() -> dict[str, Any]:
            jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
            return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

        @app.get("/authorize", response_class=HTMLResponse)
        async def authorize(request: Request) -> Response:
            q = request.query_params
            problem = self._authorize_problem(dict(q))
            if problem:
                return HTMLResponse(f"<p>{html.escape(problem)}</p>", 400)
            hidden = "".join(
                f'<input type="hidden" name="{k}" value="{html.escape(q[k])}">'
                for k in ("client_id", "redirect_uri", "state", "nonce", "code_challenge")
            )
            options = "".join(
                f'<option value="{html.escape(u)}">{html.escape(u)}</option>' for u in self.users
            )
            return HTMLResponse(
                "<!doctype html><title>Local IdP</title><h1>Local identity provider</h1>"
                f'<form method="post" action="/authorize">{hidden}'
                f'<label for="user">User</label><select id="user" name="user">{options}</select>'
                '<button type="submit">Continue</button></form>'
            )

        @app.post("/authorize")
        async def approve(
            client_id: str = Form(),
            redirect_uri: str = Form(),
            state: str = Form(),
            nonce: str = Form(),
            code_challenge: str = Form(),
            user: str = Form(),
        ) -> Response:
            if (
                user not in self.users
                or client_id != self.client_id
                or redirect_uri not in self.redirect_uris
            ):
                return HTMLResponse("<p>refused</p>", 400)
            code = secrets.token_urlsafe(24)
            self.codes[code] = Grant(client_id, redirect_uri, code_challenge, nonce, user, time.time())
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", 303)

        @app.get("/logout")
        async def logout(client_id: str, post_logout_redirect_uri: str) -> Response:
            registered = {u.rsplit("/signin/oidc/callback", 1)[0] + "/signin" for u in self.redirect_uris}
            if client_id != self.client_id or post_logout_redirect_uri not in registered:
                return HTMLResponse("<p>refused</p>", 400)
            self.logouts.append(client_id)
            return RedirectResponse(post_logout_redirect_uri, 303)

        @app.post("/token")
        async def token(
            grant_type: str = Form(),
            code: str = Form(),
            redirect_uri: str = Form(),
            client_id: str = Form(),
            code_verifier: str = Form(""),
        ) -> Response:
            self.token_requests += 1
            grant = self.codes.pop(code, None)  # single use, whatever happens next
            if grant_type != "authorization_code" or grant is None:
                return _error("invalid_grant", "unknown or used code")
            if time.time() - grant.issued_at > CODE_TTL_S:
                return _error("invalid_grant", "code expired")
            if client_id != grant.client_id or redirect_uri != grant.redirect_uri:
                return _error("invalid_grant", "code issued to another client or redirect URI")
            digest = hashlib.sha256(code_verifier.encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.challenge:
                return _error("invalid_grant", "PKCE verification failed")
            now = int(time.time())
            id_token = self.sign(
                {
                    "iss": self.issuer,
                    "aud": self.client_id,
                    "sub": grant.user,
                    "iat": now,
                    "exp": now + 300,
                    "nonce": grant.nonce,
                }
                | self.id_token_changes,
                self.id_token_key,
            )
            return JSONResponse(
                {
                    "access_token": self.access_token(grant.user),
                    "id_token": id_token,
                    "token_type": "Bearer",
                    "expires_in": self.access_ttl_s,
                },
                headers={"Cache-Control": "no-store"},
            )

        return app

    def _authorize_problem(self, q: dict[str, str]) -> str:
        if q.get("client_id") != self.client_id:
            return "unknown client"
        if q.get("redirect_uri") not in self.redirect_uris:
            return "redirect_uri not registered"
        if q.get("response_type") != "code":
            return "response_type must be code"
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return "PKCE with S256 is required"
        if not q.get("state") or not q.get("nonce"):
            return "state and nonce are required"
        if "openid" not in q.get("scope", "").split():
            return "scope must include openid"
        return ""


def _error(code: str, description: str) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=400)
