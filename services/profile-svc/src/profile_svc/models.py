"""The HTTP and NATS request and response bodies of profile-svc (pydantic at the edge).

Ranges and types are checked here; rules that tie fields together are in :mod:`profile_svc.rules`,
so each refusal still names its field.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.events import (
    DEFAULT_ALERT_LEVELS,
    AlertLevel,
    EmailSettings,
    ProfileBasics,
    SentFolder,
    SettingsSnapshot,
    SmtpMode,
)
from contracts.models import (
    CredentialSource,
    Host,
    Identifier,
    IncomingProtocol,
    Owner,
    Port,
    TlsMode,
)
from profile_svc.credentials import Login
from profile_svc.ports import PortPreset

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=500)]
PollMinutes = Annotated[int, Field(ge=0, le=1440)]
Connections = Annotated[int, Field(ge=1, le=300)]
TimeoutS = Annotated[float, Field(gt=0, le=100)]


class Strict(BaseModel):
    """Unknown fields are refused: a typo is an error, not silence."""

    model_config = ConfigDict(extra="forbid")


class IncomingIn(Strict):
    host: Host
    port: Port | None = Field(
        None, description="Default: the protocol's port for the TLS mode (993, 143, 995, 110)."
    )
    tls: TlsMode = TlsMode.IMPLICIT


class IncomingPatch(Strict):
    host: Host | None = None
    port: Port | None = None
    tls: TlsMode | None = None


class OutgoingIn(Strict):
    """With ``use_same_settings_for_outgoing`` host and TLS mode follow the incoming side; only the port may be set."""

    host: Host | None = None
    port: Port | None = Field(
        None, description="Default: 465 for implicit TLS, 587 for STARTTLS, 25 without TLS."
    )
    tls: TlsMode | None = None


class CredentialsIn(Strict):
    """Write-only logins for ``credential_source: profile``; an omitted direction keeps its stored login."""

    incoming: Login | None = None
    outgoing: Login | None = None


class AdvancedIn(Strict):
    process_email_from: date | None = None
    min_polling_interval_min: PollMinutes = 0
    max_concurrent_connections: Connections = 10
    move_failed_to_undeliverable: bool = False
    pop3_delete_after_sync: bool = Field(
        False, description="POP3 sync: delete each message from the server once published (default: keep)."
    )
    connect_timeout_s: TimeoutS = 15.0
    verify_tls: bool = True
    tls_verification_exception: Reason | None = Field(
        None,
        description="Required (10-500 characters) when verify_tls is false: why the exception is acceptable.",
    )
    allow_plaintext_auth: bool = False
    email_alert_on_majority_failure: bool = Field(
        False, description="Email the profile owner when more than 50 % of its mailboxes fail within an hour."
    )
    smtp_mode: SmtpMode = Field(
        "dry_run",
        description="The outgoing test's default: dry_run (envelope only) or send (a real message to the"
        " mailbox itself, found and deleted over IMAP).",
    )
    save_sent_copy: bool = Field(
        False,
        description="sender-svc copies each sent mail into the mailbox's Sent folder (IMAP APPEND, with the"
        " mailbox's incoming login; IMAP profiles only).",
    )
    sent_folder: SentFolder = Field("Sent", description="The folder sent mails are copied to.")


class AdvancedPatch(Strict):
    process_email_from: date | None = None
    min_polling_interval_min: PollMinutes | None = None
    max_concurrent_connections: Connections | None = None
    move_failed_to_undeliverable: bool | None = None
    pop3_delete_after_sync: bool | None = None
    connect_timeout_s: TimeoutS | None = None
    verify_tls: bool | None = None
    tls_verification_exception: Reason | None = None
    allow_plaintext_auth: bool | None = None
    email_alert_on_majority_failure: bool | None = None
    smtp_mode: SmtpMode | None = None
    save_sent_copy: bool | None = None
    sent_folder: SentFolder | None = None


class ProfileCreate(Strict):
    name: Name
    description: Description = ""
    owner: Owner
    incoming_protocol: IncomingProtocol
    incoming: IncomingIn
    use_same_settings_for_outgoing: bool = True
    outgoing: OutgoingIn | None = None
    credential_source: CredentialSource = CredentialSource.MAILBOX
    credentials: CredentialsIn | None = None
    is_default: bool = False
    advanced: AdvancedIn = AdvancedIn()


class ProfilePatch(Strict):
    """PATCH: only the fields sent change (``null`` counts as not sent); omitted secrets are kept."""

    name: Name | None = None
    description: Description | None = None
    owner: Owner | None = None
    incoming_protocol: IncomingProtocol | None = None
    incoming: IncomingPatch | None = None
    use_same_settings_for_outgoing: bool | None = None
    outgoing: OutgoingIn | None = None
    credential_source: CredentialSource | None = None
    credentials: CredentialsIn | None = None
    is_default: bool | None = None
    advanced: AdvancedPatch | None = None


class ProfileView(ProfileBasics):
    """A profile as the API shows it: never a secret, only whether one is stored."""

    profile_id: Identifier
    has_credentials: bool
    is_default: bool
    version: int
    created_at: datetime
    updated_at: datetime


class ProfilePage(BaseModel):
    items: list[ProfileView]
    total: int
    limit: int
    offset: int


class ListQuery(Strict):
    name_contains: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    owner_id: Identifier | None = None
    incoming_protocol: IncomingProtocol | None = None
    credential_source: CredentialSource | None = None
    is_default: bool | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=100_000)] = 0


class ProfileRef(Strict):
    profile_id: Identifier


class ProfileUpdateRequest(ProfilePatch):
    """The NATS form of PATCH: the profile id beside the changed fields."""

    profile_id: Identifier


class DeleteResult(BaseModel):
    profile_id: Identifier
    deleted: bool


class SettingsIn(EmailSettings):
    """PUT /settings replaces every setting; an omitted field takes its default."""

    alert_levels: Annotated[list[AlertLevel], Field(max_length=3)] = Field(
        default_factory=lambda: list(DEFAULT_ALERT_LEVELS)
    )
    port_preset: PortPreset = "default"
    # Optional here, unlike in the snapshot: a named preset brings its own list.
    allowed_ports: Annotated[list[Port], Field(min_length=1, max_length=64)] | None = Field(  # type: ignore[assignment]
        None, description='The allow-list; only (and then required) with port_preset "custom".'
    )


class SettingsView(SettingsSnapshot):
    """The settings as consumers get them, plus the preset the allow-list came from (also as stored)."""

    port_preset: PortPreset = "default"
    updated_by: str = ""
    """Who changed them last (a token's ``token:<sub>``, or this service), as every stored document
    records; the event carries the same actor in its envelope."""

    def snapshot(self) -> SettingsSnapshot:
        return SettingsSnapshot.model_validate(self.model_dump(exclude={"port_preset", "updated_by"}))


class Empty(Strict):
    pass


Outcome = Literal["created", "updated", "unchanged"]
