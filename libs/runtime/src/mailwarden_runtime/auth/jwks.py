"""The identity provider's signing keys: fetched with a deadline, cached, refetched on a new key id.

The fetch passes the one egress policy (:mod:`mailwarden_runtime.egress`) like every outbound
connection: the URL's name is resolved once, every address checked, and the request goes to a
checked address only. A provider on a private or loopback address (an in-house Keycloak, a test
provider) is reached only when the operator allows its range (``MW_AUTH_JWKS_ALLOW_NETWORKS``);
the port is the one of the URL the operator configured. At most two requests at a time,
redirects not followed and the body capped, so a slow or hostile JWKS endpoint costs one
deadline, not a pile of sockets. An unknown ``kid``
triggers a refetch (key rollover at the provider) at most once per :data:`MIN_REFRESH_S`, so
tokens with random key ids cannot turn us into a flood against the provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from mailwarden_runtime.auth.errors import AuthUnavailable
from mailwarden_runtime.egress.errors import NetError
from mailwarden_runtime.egress.http import HostLimiter, HttpEgress, parse_target
from mailwarden_runtime.egress.policy import EgressPolicy, Network
from mailwarden_runtime.egress.resolve import Resolver, SystemResolver

log = logging.getLogger(__name__)

MIN_REFRESH_S = 30.0
MAX_BODY = 256 * 1024
KEY_TYPES = {"RSA", "EC", "OKP"}
ALLOW_SETTING = "MW_AUTH_JWKS_ALLOW_NETWORKS"


class JwksCache:
    """The keys of one JWKS URL; raises ``UrlRefused`` (a ValueError) at once for a URL we never call."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        timeout_s: float,
        allow_networks: Sequence[Network] = (),
        allow_setting: str = ALLOW_SETTING,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        port = parse_target(url).port
        self._egress = HttpEgress(
            EgressPolicy(allow_networks, allowed_ports=(port,), allow_setting=allow_setting),
            resolver or SystemResolver(),
            HostLimiter(per_host=2, overall=2),
            deadline_s=timeout_s,
            dns_timeout_s=timeout_s,
            max_response_bytes=MAX_BODY,
        )
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._warned_at: float | None = None
        self.fetches = 0

    async def close(self) -> None:
        """Nothing held between fetches (each one connects to its checked address afresh)."""

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for ``kid`` (None when the set has exactly one key and the token names none)."""
        fresh = self._fetched_at is not None and self._clock() - self._fetched_at < self._ttl_s
        if not fresh:
            await self._refresh(force=True)
        found = self._pick(kid)
        if found is None and self._may_refetch():
            await self._refresh(force=False)
            found = self._pick(kid)
        return found

    def _pick(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= MIN_REFRESH_S

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            if not force and not self._may_refetch():
                return  # another request refetched while we waited
            try:
                keys = await asyncio.wait_for(self._fetch(), self._timeout_s)
            except (NetError, TimeoutError, ValueError) as exc:
                self._warn(exc)
                if self._keys:  # keep serving the keys we have; retry after the minimum interval
                    self._fetched_at = self._clock() - self._ttl_s + MIN_REFRESH_S
                    return
                raise AuthUnavailable("the identity provider's keys cannot be fetched") from exc
            self._keys = keys
            self._fetched_at = self._clock()

    def _warn(self, exc: Exception) -> None:
        """Tell the operator why (a denied address names its setting), at most once per MIN_REFRESH_S."""
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= MIN_REFRESH_S:
            self._warned_at = now
            log.warning("the identity provider's keys were not fetched: %s", exc)

    async def _fetch(self) -> dict[str, dict[str, Any]]:
        self.fetches += 1
        reply = await self._egress.get(self._url, {"Accept": "application/json"})
        if reply.status != 200:
            raise ValueError(f"JWKS answered {reply.status}")
        if reply.truncated:
            raise ValueError("JWKS too large")
        doc = json.loads(reply.body)
        keys: dict[str, dict[str, Any]] = {}
        for n, jwk in enumerate(doc.get("keys", []) if isinstance(doc, dict) else []):
            if not isinstance(jwk, dict) or jwk.get("kty") not in KEY_TYPES:
                continue  # symmetric ("oct") keys are never used to verify: no HS/RS confusion
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                PyJWK(jwk)
            except PyJWKError:
                continue
            keys[str(jwk.get("kid", f"#{n}"))] = jwk
        return keys
