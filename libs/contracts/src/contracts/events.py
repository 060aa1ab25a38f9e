"""The events of mailwarden. Each is the ``data`` of an :class:`~contracts.envelope.Envelope`.

No event carries a plaintext secret: credentials travel only as :class:`SealedSecret` ciphertexts.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints

from contracts import subjects
from contracts.errors import ErrorCode
from contracts.models import (
    CredentialSource,
    DeliveryMethod,
    Direction,
    DirectionResult,
    EmailAddress,
    Endpoint,
    Frozen,
    Identifier,
    IncomingProtocol,
    MailboxRef,
    Owner,
    Port,
    SealedSecret,
    ServerTarget,
    TestError,
    TestStatus,
    TestWarning,
)

AlertLevel = Literal["error", "warning", "information"]
Approval = Literal["pending", "approved", "rejected"]
DEFAULT_ALERT_LEVELS: tuple[AlertLevel, ...] = ("error", "information")
DEFAULT_ALLOWED_PORTS: tuple[int, ...] = (993, 995, 465, 587, 143, 110, 25)


EVENT_TYPES: dict[str, type[Event]] = {}


class Event(Frozen):
    """Base of every event: its type name, subject and schema version are fixed per class.

    An event is declared once, with its subject: ``class ProfileCreated(Event, subject=...)``.
    Its ``TYPE`` (the envelope's ``type``, the wire name) is the class name, and it registers
    itself in :data:`EVENT_TYPES` under it.
    """

    TYPE: ClassVar[str]
    SUBJECT: ClassVar[str]
    VERSION: ClassVar[int] = 1

    def __init_subclass__(cls, *, subject: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if subject is None:
            if "TYPE" in cls.__dict__ or "SUBJECT" in cls.__dict__:  # the old form would not register
                raise TypeError(f"declare {cls.__name__} as class {cls.__name__}(Event, subject=...)")
            return
        if cls.__name__ in EVENT_TYPES:
            raise TypeError(f"event type {cls.__name__!r} defined twice")
        cls.TYPE = cls.__name__
        cls.SUBJECT = subject
        EVENT_TYPES[cls.TYPE] = cls


class SealedCredentials(Frozen):
    """Login for each direction, each sealed to its owner (mailbox or profile) and direction."""

    incoming: SealedSecret | None = None
    outgoing: SealedSecret | None = None


SmtpMode = Literal["dry_run", "send"]
"""How the outgoing test ends: ``dry_run`` stops after the envelope (MAIL FROM, RCPT TO, RSET);
``send`` sends a real message to the mailbox itself, which the incoming test (IMAP) finds and deletes."""


SentFolder = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x20-\x7e]+$")]
"""The IMAP folder a sent mail is copied to (printable ASCII: no modified UTF-7 names)."""


class AdvancedOptions(Frozen):
    process_email_from: date | None = None
    min_polling_interval_min: Annotated[int, Field(ge=0, le=1440)] = 0
    max_concurrent_connections: Annotated[int, Field(ge=1, le=300)] = 10
    move_failed_to_undeliverable: bool = False
    pop3_delete_after_sync: bool = False
    connect_timeout_s: Annotated[float, Field(gt=0, le=100)] = 15.0
    verify_tls: bool = True
    tls_verification_exception: str | None = None
    allow_plaintext_auth: bool = False
    email_alert_on_majority_failure: bool = False
    smtp_mode: SmtpMode = "dry_run"
    save_sent_copy: bool = False
    sent_folder: SentFolder = "Sent"


class ProfileBasics(Frozen):
    """What every form of a profile holds: the events' snapshot, profile-svc's API view, its stored
    document and a saved draft alike (each adds its own fields)."""

    name: str
    description: str = ""
    owner: Owner
    incoming_protocol: IncomingProtocol
    incoming: Endpoint
    outgoing: Endpoint
    use_same_settings_for_outgoing: bool = False
    credential_source: CredentialSource = CredentialSource.MAILBOX
    advanced: AdvancedOptions = AdvancedOptions()


class ProfileSnapshot(ProfileBasics):
    profile_id: Identifier
    sealed_credentials: SealedCredentials | None = None
    is_default: bool = False
    version: int = 1
    updated_at: datetime


class ProfileCreated(Event, subject=subjects.PROFILE_CREATED):
    """An email server profile was created (full snapshot, credentials only sealed)."""

    profile: ProfileSnapshot


class ProfileUpdated(Event, subject=subjects.PROFILE_UPDATED):
    """A profile changed, including becoming or ceasing to be the default (higher ``version``)."""

    profile: ProfileSnapshot


class ProfileDeleted(Event, subject=subjects.PROFILE_DELETED):
    """A profile was deleted; no mailbox used it any more."""

    profile_id: Identifier


class EmailSettings(Frozen):
    """The organisation's email settings, each with its default (the snapshot adds its version)."""

    default_profile_id: Identifier | None = None
    incoming_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC
    outgoing_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC
    act_delivery: DeliveryMethod = DeliveryMethod.NONE
    approved_users_only: bool = True
    approved_queues_only: bool = True
    alert_levels: list[AlertLevel] = Field(default_factory=lambda: list(DEFAULT_ALERT_LEVELS))
    notify_mailbox_owner: bool = True
    allowed_ports: list[Port] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_PORTS))
    retest_interval_s: Annotated[int, Field(ge=0, le=2_592_000)] = Field(
        86_400,
        description="Enabled mailboxes that are not synchronized continuously (outgoing only, incoming by "
        "another delivery method, or sync paused) are tested again this long after their last test, so an "
        "expiring certificate or a changed password is reported before mail fails. 0: never.",
    )


class SettingsSnapshot(EmailSettings):
    version: int = 0
    updated_at: datetime | None = None


class EmailSettingsChanged(Event, subject=subjects.SETTINGS_CHANGED):
    """The organisation's email settings changed (also published once at first start)."""

    settings: SettingsSnapshot


class _MailboxId(Frozen):
    mailbox_id: Identifier


class MailboxSetup(Frozen):
    """What a client gives a mailbox as it is (its logins aside): set when it is created
    (mailbox-svc's ``MailboxCreate``) and shown as given by every view (:class:`MailboxBasics`)."""

    email: EmailAddress
    owner: Owner
    profile_id: Identifier | None = None
    incoming_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC
    outgoing_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC
    act_delivery: DeliveryMethod = DeliveryMethod.NONE


class MailboxBasics(MailboxSetup, _MailboxId):  # this order of bases puts mailbox_id first
    """What every view of a mailbox shows: the events' snapshot and mailbox-svc's API alike."""

    approval: Approval = "pending"
    active: bool = True

    def ref(self, profile: ProfileSnapshot) -> MailboxRef:
        """How events name this mailbox on ``profile``."""
        return MailboxRef(
            mailbox_id=self.mailbox_id,
            email=self.email,
            owner=self.owner,
            profile_id=profile.profile_id,
            profile_owner=profile.owner,
        )


class MailboxSnapshot(MailboxBasics):
    has_password: bool = False
    process_email_received_after: datetime | None = Field(
        None,
        description="The mailbox's own start of synchronization (overrides its profile's process_email_from): "
        "nothing received earlier is published.",
    )
    version: int = 1
    updated_at: datetime


class MailboxCreated(Event, subject=subjects.MAILBOX_CREATED):
    """A user or queue mailbox was created (no secrets: ``has_password`` only)."""

    mailbox: MailboxSnapshot


class MailboxUpdated(Event, subject=subjects.MAILBOX_UPDATED):
    """A mailbox changed: profile, delivery methods, approval, credentials set, deactivation."""

    mailbox: MailboxSnapshot


class MailboxApproved(Event, subject=subjects.MAILBOX_APPROVED):
    """A mailbox's email address was approved, so it may be enabled."""

    mailbox_id: Identifier
    email: EmailAddress
    approved_at: datetime


class TestRequested(Event, subject=subjects.TEST_REQUESTED):
    """Ask a tester to check one mailbox. Carries everything needed, credentials sealed."""

    __test__: ClassVar[bool] = False  # not a pytest class

    test_id: Identifier
    mailbox: MailboxRef
    target: ServerTarget
    credential_source: CredentialSource = CredentialSource.MAILBOX
    credentials: SealedCredentials | None = None
    directions: list[Direction] = Field(
        default_factory=lambda: [Direction.INCOMING, Direction.OUTGOING], min_length=1
    )
    smtp_mode: SmtpMode = "dry_run"
    allowed_ports: list[Port] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_PORTS))
    attempt: Annotated[int, Field(ge=1)] = 1
    job_id: Identifier | None = None
    requested_at: datetime


class TestCompleted(Event, subject=subjects.TEST_COMPLETED):
    """The outcome of one test, per direction, with every step's trace."""

    __test__: ClassVar[bool] = False

    test_id: Identifier
    mailbox: MailboxRef
    attempt: int = 1
    job_id: Identifier | None = None
    incoming: DirectionResult | None = None
    outgoing: DirectionResult | None = None
    started_at: datetime
    finished_at: datetime
    requested_at: datetime | None = None
    """The request's ``requested_at``: a job's result applies only to a mailbox not reset since."""
    tester: str
    withdrawn: bool = False
    """Not run: its job was cancelled before the test started (no direction results)."""

    @property
    def results(self) -> list[DirectionResult]:
        return [r for r in (self.incoming, self.outgoing) if r is not None]

    @property
    def succeeded(self) -> bool:
        return all(r.status is not TestStatus.FAILURE for r in self.results)


class MailboxStatusChanged(Event, subject=subjects.MAILBOX_STATUS_CHANGED):
    """mailbox-svc's decision after a test: statuses, enabled flags, retry or disable."""

    mailbox: MailboxRef
    test_id: Identifier | None = None
    incoming_status: TestStatus
    outgoing_status: TestStatus
    act_status: TestStatus = TestStatus.NOT_APPLICABLE
    enabled_incoming: bool
    enabled_outgoing: bool
    retry_count: int = 0
    next_retry_at: datetime | None = None
    disabled_reason: ErrorCode | None = None
    incoming_error: TestError | None = None
    outgoing_error: TestError | None = None
    warnings: list[TestWarning] = Field(default_factory=list)


class AlertRaised(Event, subject=subjects.ALERTS):
    """One alert on one recipient's wall; published on that recipient's subject."""

    alert_id: str
    recipient: Owner
    level: AlertLevel
    code: str
    title: str
    message: str
    remediation: str = ""
    mailbox_id: Identifier | None = None
    mailbox_email: EmailAddress | None = None
    profile_id: Identifier | None = None
    test_id: Identifier | None = None
    direction: Direction | None = None
    state: Literal["open", "resolved"] = "open"
    count: int = 1
    affected_mailboxes: list[Identifier] = Field(default_factory=list)
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None = None
    """When the alert was resolved (``state: resolved``): the moment of this event, not ``last_seen``."""


class FieldError(Frozen):
    loc: str
    msg: str


class DeadLettered(Event, subject=subjects.DEAD_LETTER):
    """A message a consumer could not handle, kept with the reason so nothing is silently lost."""

    consumer: str
    subject: str
    stream_seq: int | None = None
    deliveries: int = 1
    reason: Annotated[str, StringConstraints(max_length=2000)]
    errors: list[FieldError] = Field(default_factory=list)
    body_b64: str
    body_size: int
    truncated: bool = False


__all__ = [
    "EVENT_TYPES",
    "AdvancedOptions",
    "AlertLevel",
    "AlertRaised",
    "Approval",
    "DeadLettered",
    "Direction",
    "EmailSettingsChanged",
    "Event",
    "FieldError",
    "MailboxApproved",
    "MailboxBasics",
    "MailboxCreated",
    "MailboxSetup",
    "MailboxSnapshot",
    "MailboxStatusChanged",
    "MailboxUpdated",
    "ProfileCreated",
    "ProfileDeleted",
    "ProfileSnapshot",
    "ProfileUpdated",
    "SealedCredentials",
    "SentFolder",
    "SettingsSnapshot",
    "TestCompleted",
    "TestRequested",
]
