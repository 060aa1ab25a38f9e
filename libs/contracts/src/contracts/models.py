"""Value types shared by several events."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
)

from contracts.errors import CATALOG, ErrorCode, ErrorScope, WarningCode

_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")


def _check_host(value: str) -> str:
    value = value.strip().lower()
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError("must be a host name (letters, digits, hyphens, dots) or an IP address")
    return value.rstrip(".")


Host = Annotated[str, AfterValidator(_check_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
EmailAddress = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$"),
]


MAX_PASSWORD_CHARS = 1024


def _password_length(value: object) -> object:
    """Count a password's characters before it is wrapped (a SecretStr's own check says "items")."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str):
        if not text:
            raise ValueError("must not be empty")
        if len(text) > MAX_PASSWORD_CHARS:
            raise ValueError(f"must be at most {MAX_PASSWORD_CHARS} characters, not {len(text)}")
    return value


Password = Annotated[SecretStr, BeforeValidator(_password_length)]
"""A write-only password of 1 to 1024 characters; its errors count characters and never echo it."""


class Frozen(BaseModel):
    """Events are immutable and reject unknown fields, so a typo is an error, not silence."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsMode(StrEnum):
    IMPLICIT = "implicit"
    STARTTLS = "starttls"
    NONE = "none"


class IncomingProtocol(StrEnum):
    IMAP = "imap"
    POP3 = "pop3"


class CredentialSource(StrEnum):
    """Where the login comes from: the mailbox (user or queue) or the profile. OAuth2 comes later."""

    MAILBOX = "mailbox"
    PROFILE = "profile"


class DeliveryMethod(StrEnum):
    NONE = "none"
    SERVER_SIDE_SYNC = "server_side_sync"
    EMAIL_ROUTER = "email_router"


ACT_NOT_SUPPORTED = (
    "appointments, contacts and tasks cannot use server-side synchronization with an IMAP or POP3 "
    'profile (not supported for IMAP/POP profiles): use "none" or "email_router"'
)
"""The refusal of ACT server-side sync, the same in the org settings and on every mailbox."""


def act_sync_refused(act_delivery: str | None, incoming_protocol: str | None) -> bool:
    """ACT server-side synchronization is not supported with an IMAP or POP3 profile (as in Dynamics)."""
    return act_delivery == DeliveryMethod.SERVER_SIDE_SYNC.value and incoming_protocol in {
        IncomingProtocol.IMAP.value,
        IncomingProtocol.POP3.value,
    }


class OwnerKind(StrEnum):
    USER = "user"
    QUEUE = "queue"


class TestStatus(StrEnum):
    __test__ = False  # not a pytest class
    NOT_RUN = "not_run"
    SUCCESS = "success"
    FAILURE = "failure"
    NOT_APPLICABLE = "not_applicable"


class Direction(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class Owner(Frozen):
    """Who receives alerts: a user, or a queue (whose alerts go to its owner's address)."""

    kind: OwnerKind
    id: Identifier
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    email: EmailAddress | None = None


class Endpoint(Frozen):
    host: Host
    port: Port
    tls: TlsMode


class ServerTarget(Frozen):
    """What the tester needs to know about a profile to test one mailbox."""

    profile_id: Identifier
    profile_name: str
    incoming_protocol: IncomingProtocol
    incoming: Endpoint
    outgoing: Endpoint
    verify_tls: bool = True
    allow_plaintext_auth: bool = False
    connect_timeout_s: Annotated[float, Field(gt=0, le=100)] = 15.0
    max_concurrent_connections: Annotated[int, Field(ge=1, le=300)] = 10


class SealedSecret(Frozen):
    """An AEAD ciphertext (key id, nonce, ciphertext; base64url). Never a plaintext secret."""

    kid: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    nonce: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    ct: Annotated[str, StringConstraints(min_length=1, max_length=8192)]


class MailboxRef(Frozen):
    """Enough about a mailbox for any consumer to act and alert without a lookup."""

    mailbox_id: Identifier
    email: EmailAddress
    owner: Owner
    profile_id: Identifier
    profile_owner: Owner


Fact = str | int | float | bool | None


class StepResult(Frozen):
    """One timed step of a test (resolve, policy, connect, tls, greeting, ..., logout)."""

    name: str
    ok: bool
    duration_ms: float
    facts: dict[str, Fact | list[str]] = Field(default_factory=dict)
    error_code: ErrorCode | None = None
    detail: str | None = None


class TestError(Frozen):
    code: ErrorCode
    step: str
    transient: bool
    scope: ErrorScope
    message: str

    @classmethod
    def of(cls, code: ErrorCode, step: str, message: str | None = None) -> TestError:
        """``code`` at ``step`` as the error catalog classifies it (transient, scope), with the
        catalog's message unless another is given."""
        spec = CATALOG[code]
        text = spec.message if message is None else message
        return cls(code=code, step=step, transient=spec.transient, scope=spec.scope, message=text)


class TestWarning(Frozen):
    code: WarningCode
    message: str


class DirectionResult(Frozen):
    direction: Direction
    protocol: Literal["imap", "pop3", "smtp"]
    status: TestStatus
    error: TestError | None = None
    steps: list[StepResult] = Field(default_factory=list)
    warnings: list[TestWarning] = Field(default_factory=list)
    started_at: datetime
    duration_ms: float


JsonDict = dict[str, Any]
