"""Operator operations profile-svc serves for the whole system: API tokens and the audit trail.

Declared like every operation (served on HTTP and ``mailwarden.rpc.profile-svc.<name>``); the
tokens live in the shared KV bucket every service verifies from, so which service manages them
does not matter.
"""

from __future__ import annotations

from typing import Any

from contracts.access import ApiTokenCreated, ApiTokenRevoked, CredentialKeysRotated
from mailwarden_runtime.audit import AuditPage, AuditQuery, audit_trail
from mailwarden_runtime.auth.tokens_api import (
    Empty,
    TokenAdmin,
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenRef,
    TokenView,
)
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.operations import Bound, Operation
from mailwarden_runtime.service import ServiceRuntime
from profile_svc.rotation import ProfileRotationReport, rotate_profile_credentials
from profile_svc.store.profiles import ProfileStore

TOKENS = ("tokens",)

TOKENS_LIST = Operation(
    name="tokens_list",
    method="GET",
    path="/tokens",
    input=Empty,
    output=TokenList,
    permission="tokens:manage",
    summary="API tokens (never their secrets)",
    tags=TOKENS,
)
TOKENS_CREATE = Operation(
    name="tokens_create",
    method="POST",
    path="/tokens",
    input=TokenCreate,
    output=TokenCreated,
    permission="tokens:manage",
    summary="Create an API token (its secret is shown this once)",
    status_code=201,
    tags=TOKENS,
)
TOKENS_REVOKE = Operation(
    name="tokens_revoke",
    method="DELETE",
    path="/tokens/{token_id}",
    input=TokenRef,
    output=TokenView,
    permission="tokens:manage",
    summary="Revoke an API token (every service refuses it within MW_AUTH_TOKEN_CACHE_S)",
    errors={404: "No such token"},
    tags=TOKENS,
)
AUDIT = Operation(
    name="audit",
    method="GET",
    path="/audit",
    input=AuditQuery,
    output=AuditPage,
    permission="audit:read",
    summary="Who changed what and when (the actors of the events), newest first",
    errors={503: "Not connected to NATS"},
    tags=("audit",),
)

ROTATE_KEYS = Operation(
    name="rotate_keys",
    method="POST",
    path="/profiles/rotate-keys",
    input=Empty,
    output=ProfileRotationReport,
    permission="keys:rotate",
    summary="Re-encrypt every profile login under the primary key; report what does not open",
    tags=("profiles",),
    docs="Put a new key first in MW_PROFILE_CREDENTIAL_KEYS (keep the old ones), restart, then run this.",
)

ADMIN_OPERATIONS: tuple[Operation[Any, Any], ...] = (
    TOKENS_LIST,
    TOKENS_CREATE,
    TOKENS_REVOKE,
    AUDIT,
    ROTATE_KEYS,
)


def bind_admin(runtime: ServiceRuntime, profiles: ProfileStore, ring: KeyRing) -> list[Bound[Any, Any]]:
    async def announce(event: ApiTokenCreated | ApiTokenRevoked) -> None:
        await runtime.publish(runtime.envelope(event))

    admin = TokenAdmin(runtime.authenticator.tokens, announce)

    async def rotate_keys(_: Empty) -> ProfileRotationReport:
        report = await rotate_profile_credentials(profiles, ring)
        done = CredentialKeysRotated.of("profile-svc", report)
        await runtime.publish(runtime.envelope(done))  # the audit: who rotated, with what result
        return report

    async def tokens_list(_: Empty) -> TokenList:
        return await admin.list()

    async def audit(q: AuditQuery) -> AuditPage:
        if not runtime.bus.is_connected:
            raise DomainError(503, "not connected to NATS")
        return await audit_trail(runtime.bus.connection, q)

    return [
        TOKENS_LIST.bind(tokens_list),
        TOKENS_CREATE.bind(admin.create),
        TOKENS_REVOKE.bind(admin.revoke),
        AUDIT.bind(audit),
        ROTATE_KEYS.bind(rotate_keys),
    ]
