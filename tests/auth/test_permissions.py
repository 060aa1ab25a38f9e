"""The role table: what each role may do, and what it may do only on its own things."""

from __future__ import annotations

from mailwarden_runtime.auth import PERMISSIONS, ROLE_PERMISSIONS, Principal, Role, Scope
from mailwarden_runtime.auth.service_tokens import SERVICE_GRANTS


def _principal(*roles: Role, subject: str = "alice", mailboxes: frozenset[str] = frozenset()) -> Principal:
    return Principal(subject=subject, roles=frozenset(roles), mailboxes=mailboxes)


def test_the_brief_roles() -> None:
    assert set(ROLE_PERMISSIONS[Role.SYSTEM_ADMIN]) == set(PERMISSIONS) - {"credentials:use"}
    email_admin = set(ROLE_PERMISSIONS[Role.EMAIL_ADMIN])
    assert {"settings:write", "keys:rotate", "tokens:manage", "audit:read"}.isdisjoint(email_admin)
    assert {"profiles:write", "mailboxes:approve", "jobs:run", "settings:read"} <= email_admin
    assert set(ROLE_PERMISSIONS[Role.APPROVER]) == {"mailboxes:read", "mailboxes:approve"}
    auditor = ROLE_PERMISSIONS[Role.AUDITOR]
    assert all(p.endswith(":read") for p in auditor) and "audit:read" in auditor
    assert "mailboxes:credentials" not in auditor
    assert set(ROLE_PERMISSIONS[Role.MAILBOX_OWNER].values()) == {Scope.OWN}
    assert set(ROLE_PERMISSIONS[Role.INTEGRATION]) == {"mail:send", "mail:read", "mailboxes:read"}


def test_only_the_connecting_services_may_use_logins() -> None:
    """credentials:use opens a mailbox's login for a connection: no human role has it."""
    assert all("credentials:use" not in granted for granted in ROLE_PERMISSIONS.values())
    holders = {service for service, granted in SERVICE_GRANTS.items() if "credentials:use" in granted}
    assert holders == {"sync-svc", "sender-svc"}


def test_owner_scope_is_their_own_mailbox_and_wall() -> None:
    owner = _principal(Role.MAILBOX_OWNER, mailboxes=frozenset({"shared-q"}))
    assert owner.allows_mailbox("mailboxes:credentials", "mbx-a", owner_id="alice")
    assert owner.allows_mailbox("mailboxes:test", "shared-q", owner_id="bob")
    assert not owner.allows_mailbox("mailboxes:test", "mbx-b", owner_id="bob")
    assert not owner.allows_mailbox("mailboxes:approve", "mbx-a", owner_id="alice")
    assert owner.allows_recipient("alerts:read", "user", "alice")
    assert not owner.allows_recipient("alerts:read", "user", "bob")
    assert not owner.allows_recipient("alerts:read", "queue", "alice")
    admin = _principal(Role.EMAIL_ADMIN)
    assert admin.allows_mailbox("mailboxes:test", "mbx-b", owner_id="bob")
    assert admin.scope("alerts:read") is Scope.ALL


def test_roles_combine_to_the_widest_scope() -> None:
    both = _principal(Role.MAILBOX_OWNER, Role.APPROVER)
    assert both.scope("mailboxes:read") is Scope.ALL
    assert both.scope("mailboxes:credentials") is Scope.OWN
    assert _principal().scope("mailboxes:read") is None
