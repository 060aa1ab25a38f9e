"""API tokens for integrations and operators: random, stored hashed, scoped, expiring, revocable.

Where they live: a JetStream Key-Value bucket (``MW_API_TOKENS``), one key per token id. Every
service already holds a NATS connection, so every service verifies a token itself (a local cache
of ``MW_AUTH_TOKEN_CACHE_S`` in front of one KV read) and no service is a single point of
failure for authentication; the bucket is replicated like our streams (``MW_STREAM_REPLICAS``),
and NATS permissions decide who may write it. A MongoDB collection owned by one service would
have made every other service ask it over request-reply on each new token.

The token text is ``mwt_<id>_<secret>``: the id finds the record, the secret (256 random bits) is
compared against its SHA-256 in constant time. A fast hash is right here: a password hash slows
down guessing low-entropy secrets, and a 256-bit random secret cannot be guessed. The secret is
shown once, at creation, and stored nowhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import nats.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from mailwarden_runtime.auth.errors import AuthUnavailable, Unauthenticated
from mailwarden_runtime.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from mailwarden_runtime.auth.principal import Principal
from mailwarden_runtime.buckets import kv_keys

PREFIX = "mwt_"
TOKEN_RE = re.compile(r"^mwt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
MAX_TTL = timedelta(days=730)


class TokenInfo(BaseModel):
    """What a token listing shows: everything but the secret (and its hash)."""

    token_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    subject: str = Field(min_length=1, max_length=128)
    roles: list[Role] = Field(min_length=1)
    mailboxes: list[str] = []
    scopes: list[Permission] = []
    """At most these permissions of the roles' (e.g. ``mailboxes:write`` without ``mailboxes:approve``);
    empty: everything the roles grant."""
    description: str = Field("", max_length=200)
    created_by: str = Field("", max_length=300)
    created_at: AwareDatetime
    expires_at: AwareDatetime
    revoked_at: AwareDatetime | None = None
    revoked_by: str | None = Field(None, max_length=300)

    def state_at(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


class TokenRecord(TokenInfo):
    """The stored form: the listing plus the secret's SHA-256 (hex)."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")

    def info(self) -> TokenInfo:
        return TokenInfo.model_validate(self.model_dump(exclude={"digest"}))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    subject: str,
    roles: list[Role],
    *,
    ttl: timedelta,
    mailboxes: list[str] | None = None,
    scopes: list[Permission] | None = None,
    description: str = "",
    created_by: str = "",
    now: datetime | None = None,
) -> tuple[str, TokenRecord]:
    """A fresh token: its text (give it to the caller once) and the record to store."""
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise ValueError(f"a token lives between 1 s and {MAX_TTL.days} days")
    if ungranted := ungranted_scopes(roles, scopes or []):
        raise ValueError(f"scopes not granted by the roles: {', '.join(ungranted)}")
    now = now or datetime.now(UTC)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        subject=subject,
        roles=roles,
        mailboxes=sorted(set(mailboxes or [])),
        scopes=sorted(set(scopes or [])),
        description=description,
        created_by=created_by,
        created_at=now,
        expires_at=now + ttl,
        digest=_digest(secret),
    )
    return f"{PREFIX}{token_id}_{secret}", record


def ungranted_scopes(roles: list[Role], scopes: list[Permission]) -> list[Permission]:
    """The scopes none of ``roles`` grants: a scope narrows a token, it never widens it."""
    return [s for s in scopes if not any(s in ROLE_PERMISSIONS[r] for r in roles)]


def looks_like_api_token(text: str) -> bool:
    return text.startswith(PREFIX)


def principal_for(record: TokenRecord, secret: str, now: datetime) -> Principal:
    """The caller of a token whose record was found; refuses a wrong secret, expired or revoked."""
    if not hmac.compare_digest(record.digest, _digest(secret)):
        raise Unauthenticated("token does not verify")
    if record.revoked_at is not None:
        raise Unauthenticated("token revoked")
    if now >= record.expires_at:
        raise Unauthenticated("token expired")
    return Principal(
        subject=record.subject,
        roles=frozenset(record.roles),
        mailboxes=frozenset(record.mailboxes),
        via="token",
        limit=frozenset(record.scopes) if record.scopes else None,
    )


class TokenStore:
    """The KV bucket of token records, opened (created if missing) on the service's connection."""

    def __init__(
        self,
        connection: Callable[[], Client | None],
        *,
        bucket: str = "MW_API_TOKENS",
        replicas: int = 1,
        timeout_s: float = 3.0,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connection = connection
        self.bucket = bucket
        self._replicas = replicas
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        async with self._lock:
            if self._kv is None:
                nc = self._connection()
                if nc is None:
                    raise AuthUnavailable("not connected to NATS")
                js = nc.jetstream(timeout=self._timeout_s)
                try:
                    self._kv = await js.key_value(self.bucket)
                except (BucketNotFoundError, NotFoundError):
                    self._kv = await js.create_key_value(
                        KeyValueConfig(
                            bucket=self.bucket,
                            description="mailwarden API tokens (hashed; no secrets)",
                            history=5,
                            storage=StorageType.FILE,
                            replicas=self._replicas,
                        )
                    )
            return self._kv

    async def get(self, token_id: str) -> TokenRecord | None:
        try:
            kv = await asyncio.wait_for(self._bucket(), self._timeout_s)
            entry = await asyncio.wait_for(kv.get(token_id), self._timeout_s)
        except KeyNotFoundError:
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            raise AuthUnavailable("the token store does not answer") from exc
        if entry.value is None:
            return None
        try:
            return TokenRecord.model_validate_json(entry.value)
        except ValidationError:
            return None

    async def put(self, record: TokenRecord) -> None:
        kv = await asyncio.wait_for(self._bucket(), self._timeout_s)
        await asyncio.wait_for(kv.put(record.token_id, record.model_dump_json().encode()), self._timeout_s)
        self._cache.pop(record.token_id, None)

    async def list(self) -> list[TokenRecord]:
        await asyncio.wait_for(self._bucket(), self._timeout_s)
        nc = self._connection()
        if nc is None:
            raise AuthUnavailable("not connected to NATS")
        try:
            keys = await kv_keys(nc.jetstream(timeout=self._timeout_s), self.bucket)
        except (TimeoutError, nats.errors.Error) as exc:
            raise AuthUnavailable("the token store does not answer") from exc
        records = [await self.get(k) for k in keys]
        return [r for r in records if r is not None]

    async def revoke(self, token_id: str, now: datetime | None = None, by: str = "") -> TokenRecord | None:
        record = await self.get(token_id)
        if record is None:
            return None
        if record.revoked_at is None:
            record = record.model_copy(update={"revoked_at": now or datetime.now(UTC), "revoked_by": by})
            await self.put(record)
        return record

    async def lookup(self, token_id: str) -> TokenRecord | None:
        """The record through the short cache: revocation reaches every service within ``cache_s``."""
        hit = self._cache.get(token_id)
        if hit is not None and self._clock() - hit[0] < self._cache_s:
            return hit[1]
        record = await self.get(token_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token_id] = (self._clock(), record)
        return record

    async def verify(self, text: str, now: datetime | None = None) -> Principal:
        match = TOKEN_RE.match(text)
        if match is None:
            raise Unauthenticated("malformed token")
        record = await self.lookup(match.group(1))
        if record is None:
            raise Unauthenticated("unknown token")
        return principal_for(record, match.group(2), now or datetime.now(UTC))


def dump_token_file(text: str, record: TokenRecord) -> str:
    """The admin token file's content (JSON: the token and its public facts)."""
    return json.dumps({"token": text, **record.info().model_dump(mode="json")}, indent=2) + "\n"
