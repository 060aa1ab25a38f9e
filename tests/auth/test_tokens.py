"""API tokens in the NATS KV bucket: hashed, scoped, expiring, revocable, listed without secrets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest
from nats.aio.client import Client

from mailwarden_runtime.auth import Role, Unauthenticated
from mailwarden_runtime.auth.tokens import TokenStore, new_token
from mailwarden_runtime.auth.tokens_api import TokenAdmin, TokenCreate
from mailwarden_runtime.http import DomainError

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


@pytest.fixture
def store(nc: Client) -> TokenStore:
    return TokenStore(lambda: nc, bucket=f"T_TOKENS_{uuid.uuid4().hex[:8]}", cache_s=0)


async def test_a_token_verifies_and_is_stored_only_hashed(store: TokenStore, nc: Client) -> None:
    text, record = new_token("crm", [Role.INTEGRATION], ttl=timedelta(days=1), mailboxes=["q1", "q1", "q2"])
    await store.put(record)
    principal = await store.verify(text)
    assert principal.subject == "crm"
    assert principal.roles == frozenset({Role.INTEGRATION})
    assert principal.mailboxes == frozenset({"q1", "q2"})
    assert principal.actor == "token:crm"
    secret = text.rsplit("_", 1)[1]
    kv = await nc.jetstream().key_value(store.bucket)
    stored = (await kv.get(record.token_id)).value or b""
    assert secret.encode() not in stored
    assert text.encode() not in stored
    listed = await store.list()
    assert [t.info().token_id for t in listed] == [record.token_id]
    assert "digest" not in listed[0].info().model_dump()


async def test_wrong_secret_expired_revoked_and_malformed_are_refused(store: TokenStore) -> None:
    text, record = new_token("ops", [Role.SYSTEM_ADMIN], ttl=timedelta(hours=1))
    await store.put(record)
    token_id = record.token_id
    forged = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
    for bad in (forged, "mwt_", "mwt_nothex0000000000_x", f"mwt_{'0' * 16}_{'A' * 43}", text + "x"):
        with pytest.raises(Unauthenticated):
            await store.verify(bad)
    with pytest.raises(Unauthenticated, match="expired"):
        await store.verify(text, now=datetime.now(UTC) + timedelta(hours=2))
    revoked = await store.revoke(token_id)
    assert revoked is not None and revoked.revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        await store.verify(text)
    assert (await store.list())[0].info().state_at(datetime.now(UTC)) == "revoked"


async def test_revocation_reaches_a_caching_verifier_within_its_cache_time(nc: Client) -> None:
    bucket = f"T_TOKENS_{uuid.uuid4().hex[:8]}"
    now = [0.0]
    issuer = TokenStore(lambda: nc, bucket=bucket)
    other = TokenStore(lambda: nc, bucket=bucket, cache_s=5.0, clock=lambda: now[0])
    text, record = new_token("crm", [Role.INTEGRATION], ttl=timedelta(days=1))
    await issuer.put(record)
    await other.verify(text)
    await issuer.revoke(record.token_id)
    await other.verify(text)  # still cached
    now[0] = 5.0
    with pytest.raises(Unauthenticated, match="revoked"):
        await other.verify(text)


def test_token_lifetimes_are_bounded() -> None:
    for ttl in (timedelta(0), timedelta(days=800)):
        with pytest.raises(ValueError):
            new_token("x", [Role.AUDITOR], ttl=ttl)


async def test_scopes_narrow_a_token_to_some_of_its_roles_permissions(store: TokenStore) -> None:
    text, record = new_token(
        "crm", [Role.EMAIL_ADMIN], ttl=timedelta(hours=1), scopes=["mailboxes:write", "mailboxes:read"]
    )
    await store.put(record)
    principal = await store.verify(text)
    assert principal.allows("mailboxes:write") and principal.allows("mailboxes:read")
    assert not principal.allows("mailboxes:approve")  # email_admin grants it; the scope does not
    assert not principal.allows("profiles:write")
    unscoped, record = new_token("crm2", [Role.EMAIL_ADMIN], ttl=timedelta(hours=1))
    await store.put(record)
    assert (await store.verify(unscoped)).allows("mailboxes:approve")


def test_a_scope_never_widens_a_token() -> None:
    with pytest.raises(ValueError, match="keys:rotate"):
        new_token("x", [Role.EMAIL_ADMIN], ttl=timedelta(hours=1), scopes=["keys:rotate"])


async def test_creating_a_token_with_a_scope_its_roles_lack_names_the_field(store: TokenStore) -> None:
    admin = TokenAdmin(store)
    req = TokenCreate(subject="x", roles=[Role.APPROVER], scopes=["mailboxes:read", "mailboxes:write"])
    with pytest.raises(DomainError) as refused:
        await admin.create(req)
    assert (refused.value.status, refused.value.field) == (422, "scopes.1")
    assert await store.list() == []
    created = await admin.create(req.model_copy(update={"scopes": ["mailboxes:read"]}))
    assert created.scopes == ["mailboxes:read"]
