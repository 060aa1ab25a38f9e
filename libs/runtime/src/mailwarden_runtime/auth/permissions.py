"""Roles and the permissions they grant: the one table the docs and the checks are made from.

The permission names are the shared vocabulary of the operation declarations. A role grants a
permission either on everything (``ALL``) or only on what the principal owns or was granted
(``OWN``: a mailbox owner's own mailboxes and alerts wall, an integration's granted mailboxes);
the operation then narrows the data it reads or refuses with 403.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

Permission = Literal[
    "settings:read",
    "settings:write",
    "profiles:read",
    "profiles:write",
    "mailboxes:read",
    "mailboxes:write",
    "mailboxes:approve",
    "mailboxes:test",
    "mailboxes:credentials",
    "jobs:run",
    "keys:rotate",
    "alerts:read",
    "alerts:write",
    "channels:read",
    "channels:write",
    "audit:read",
    "mail:read",
    "mail:send",
    "tokens:manage",
    "credentials:use",
]
PERMISSIONS: Final[tuple[Permission, ...]] = Permission.__args__  # type: ignore[attr-defined]


class Role(StrEnum):
    SYSTEM_ADMIN = "system_admin"
    EMAIL_ADMIN = "email_admin"
    APPROVER = "approver"
    MAILBOX_OWNER = "mailbox_owner"
    AUDITOR = "auditor"
    INTEGRATION = "integration"


class Scope(StrEnum):
    ALL = "all"
    OWN = "own"


ROLE_DESCRIPTIONS: Final[dict[Role, str]] = {
    Role.SYSTEM_ADMIN: "everything, including org email settings, key rotation and API tokens",
    Role.EMAIL_ADMIN: "profiles, mailboxes, approve, test, jobs, alerts and channels; reads the settings",
    Role.APPROVER: "reads mailboxes and approves them (Approve Email)",
    Role.MAILBOX_OWNER: "their own mailboxes (read, set credentials, test) and their own alerts wall",
    Role.AUDITOR: "reads everything and the audit trail; never secrets, never a change",
    Role.INTEGRATION: "reads and sends mail as, and reads, the mailboxes it is granted",
}

SERVICE_ONLY: Final[frozenset[Permission]] = frozenset({"credentials:use"})
"""Granted to no human role: only services hold it (``auth.service_tokens.SERVICE_GRANTS``)."""
_HUMAN_PERMISSIONS: Final = tuple(p for p in PERMISSIONS if p not in SERVICE_ONLY)
_READS: Final = tuple(p for p in _HUMAN_PERMISSIONS if p.endswith(":read"))

ROLE_PERMISSIONS: Final[dict[Role, dict[Permission, Scope]]] = {
    Role.SYSTEM_ADMIN: dict.fromkeys(_HUMAN_PERMISSIONS, Scope.ALL),
    Role.EMAIL_ADMIN: dict.fromkeys(
        (
            "profiles:read",
            "profiles:write",
            "mailboxes:read",
            "mailboxes:write",
            "mailboxes:approve",
            "mailboxes:test",
            "mailboxes:credentials",
            "jobs:run",
            "settings:read",
            "alerts:read",
            "alerts:write",
            "channels:read",
            "channels:write",
        ),
        Scope.ALL,
    ),
    Role.APPROVER: dict.fromkeys(("mailboxes:read", "mailboxes:approve"), Scope.ALL),
    Role.MAILBOX_OWNER: dict.fromkeys(
        ("mailboxes:read", "mailboxes:credentials", "mailboxes:test", "alerts:read", "alerts:write"),
        Scope.OWN,
    ),
    Role.AUDITOR: dict.fromkeys(_READS, Scope.ALL),
    Role.INTEGRATION: dict.fromkeys(("mail:send", "mail:read", "mailboxes:read"), Scope.OWN),
}


def role_matrix_markdown() -> str:
    """The role x permission table for docs/access.md (generated, so it cannot drift from the code)."""
    roles = list(Role)
    head = "| permission | " + " | ".join(f"`{r.value}`" for r in roles) + " |"
    rule = "|---|" + "---|" * len(roles)
    rows = []
    for perm in PERMISSIONS:
        cells = []
        for role in roles:
            scope = ROLE_PERMISSIONS[role].get(perm)
            cells.append("all" if scope is Scope.ALL else "own" if scope is Scope.OWN else "-")
        rows.append(f"| `{perm}` | " + " | ".join(cells) + " |")
    legend = "\n".join(f"- `{r.value}`: {ROLE_DESCRIPTIONS[r]}" for r in roles)
    return "\n".join([head, rule, *rows]) + "\n\n" + legend + "\n"
