"""Verifying the organisation's OAuth2/OIDC access tokens (JWTs) with PyJWT.

Checks, in order: the header parses; ``alg`` is on our allow-list (asymmetric only) and fits the
key's type (an RSA key never verifies an EC or HMAC signature, whatever the token claims); the
signature with the provider's key named by ``kid``; ``iss``, ``aud``, ``exp``, ``nbf`` (with a
small leeway) and a ``sub``. Every failure is a 401 with a short reason; none is a 500.
"""

from __future__ import annotations

from typing import Any

import jwt
from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from mailwarden_runtime.auth.errors import Unauthenticated
from mailwarden_runtime.auth.jwks import JwksCache
from mailwarden_runtime.auth.permissions import Role
from mailwarden_runtime.auth.principal import Principal
from mailwarden_runtime.auth.settings import AuthSettings

KEY_TYPE_OF = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class OidcVerifier:
    def __init__(self, settings: AuthSettings, jwks: JwksCache | None = None) -> None:
        if not settings.oidc_enabled:
            raise ValueError(
                "OIDC needs MW_AUTH_OIDC_ISSUER, MW_AUTH_OIDC_AUDIENCE and MW_AUTH_OIDC_JWKS_URL"
            )
        self._settings = settings
        self._algorithms = list(settings.oidc_algorithms)
        self.jwks = jwks or JwksCache(
            str(settings.oidc_jwks_url),
            ttl_s=settings.jwks_cache_s,
            timeout_s=settings.jwks_timeout_s,
            allow_networks=settings.jwks_networks,
        )

    async def close(self) -> None:
        await self.jwks.close()

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise Unauthenticated("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthenticated("token algorithm not allowed")
        kid = header.get("kid")
        jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
        if jwk is None:
            raise Unauthenticated("token signed with an unknown key")
        if jwk.get("kty") != KEY_TYPE_OF.get(alg[:2]) or jwk.get("alg", alg) != alg:
            raise Unauthenticated("token algorithm does not fit its key")
        try:
            key = PyJWK(jwk, algorithm=alg).key
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._settings.oidc_audience,
                issuer=self._settings.oidc_issuer,
                leeway=self._settings.oidc_leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except (PyJWTError, PyJWKError, ValueError, TypeError):
            raise Unauthenticated("token does not verify") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise Unauthenticated("token has no subject")
        known = {r.value for r in Role}
        roles = frozenset(Role(r) for r in _names(claims.get(self._settings.oidc_roles_claim)) if r in known)
        mailboxes = frozenset(_names(claims.get(self._settings.oidc_mailboxes_claim)))
        return Principal(subject=subject, roles=roles, mailboxes=mailboxes, via="jwt")
