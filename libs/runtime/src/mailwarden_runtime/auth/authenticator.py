"""One entry point: a bearer token (API token or OIDC JWT) in, a :class:`Principal` out, or a 401."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from nats.aio.client import Client

from mailwarden_runtime.auth.errors import AuthError, Unauthenticated
from mailwarden_runtime.auth.oidc import OidcVerifier
from mailwarden_runtime.auth.principal import Principal
from mailwarden_runtime.auth.service_tokens import PREFIX as SERVICE_PREFIX
from mailwarden_runtime.auth.service_tokens import verify_service_token
from mailwarden_runtime.auth.settings import AuthSettings
from mailwarden_runtime.auth.tokens import TokenStore, looks_like_api_token
from mailwarden_runtime.crypto import KeyRing

log = logging.getLogger(__name__)
MAX_TOKEN_LEN = 8192
VERIFY_TIMEOUT_S = 10.0


def bearer(headers: Mapping[str, str] | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (HTTP or NATS), case-insensitive."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_header(token: str) -> dict[str, str]:
    """The header that carries a token, on HTTP requests and NATS request messages alike."""
    return {"Authorization": f"Bearer {token}"}


class Authenticator:
    def __init__(
        self,
        settings: AuthSettings,
        tokens: TokenStore,
        oidc: OidcVerifier | None = None,
        service_ring: KeyRing | None = None,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.oidc = oidc
        self.service_ring = service_ring  # the transit ring: checks services' own tokens

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        connection: Callable[[], Client | None],
        replicas: int = 1,
        service_ring: KeyRing | None = None,
    ) -> Authenticator:
        tokens = TokenStore(
            connection, bucket=settings.token_bucket, replicas=replicas, cache_s=settings.token_cache_s
        )
        oidc = OidcVerifier(settings) if settings.oidc_enabled else None
        return cls(settings, tokens, oidc, service_ring)

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()

    async def authenticate(self, headers: Mapping[str, str] | None) -> Principal:
        token = bearer(headers)
        if token is None:
            raise Unauthenticated("a bearer token is required")
        if len(token) > MAX_TOKEN_LEN or not token.isascii():
            raise Unauthenticated("malformed token")
        try:
            async with asyncio.timeout(VERIFY_TIMEOUT_S):
                if looks_like_api_token(token):
                    return await self.tokens.verify(token)
                if token.startswith(SERVICE_PREFIX):
                    return verify_service_token(self.service_ring, token)
                if self.oidc is None:
                    raise Unauthenticated("JWTs are not accepted here (no identity provider configured)")
                return await self.oidc.verify(token)
        except AuthError:
            raise
        except TimeoutError:
            raise Unauthenticated("token could not be verified in time") from None
        except Exception:  # a verification bug must be a refusal, never a 500 or an acceptance
            log.exception("token verification failed unexpectedly")
            raise Unauthenticated("token does not verify") from None
