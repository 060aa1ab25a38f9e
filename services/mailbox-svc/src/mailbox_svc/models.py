"""The API's input and output models: validated at the edge, secrets write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contracts.events import Approval, MailboxBasics, MailboxSetup, SmtpMode, TestCompleted
from contracts.models import (
    DeliveryMethod,
    EmailAddress,
    Identifier,
    Owner,
    OwnerKind,
    Password,
    SealedSecret,
    TestStatus,
    TestWarning,
)

Username = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
Limit = Annotated[int, Field(ge=1, le=500)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(Strict):
    """A user name and password; the password is never returned or logged."""

    username: Username
    password: Password


class LoginPatch(Strict):
    """Change a login; an omitted password keeps the stored one."""

    username: Username | None = None
    password: Password | None = None


class _NewMailboxId(Strict):
    mailbox_id: Identifier | None = None


# A new mailbox: what every view shows as given (MailboxSetup), its logins, and its id if the client
# chooses it. The order of the bases puts mailbox_id first; no docstring, which the API would show.
class MailboxCreate(MailboxSetup, _NewMailboxId):
    process_email_received_after: AwareDatetime | None = None
    credentials: Login | None = None
    outgoing_credentials: Login | None = None


class MailboxBatchCreate(Strict):
    mailboxes: Annotated[list[MailboxCreate], Field(min_length=1, max_length=1000)]
    approve: bool = Field(
        False,
        description=(
            "Store the mailboxes approved (needs `mailboxes:approve` on each as well): one insert "
            "per mailbox with its MailboxApproved, instead of a create and then an approve."
        ),
    )


class MailboxPatch(Strict):
    """Fields to change; a field left out is kept, ``null`` clears where that makes sense."""

    email: EmailAddress | None = None
    owner: Owner | None = None
    profile_id: Identifier | None = None
    incoming_delivery: DeliveryMethod | None = None
    outgoing_delivery: DeliveryMethod | None = None
    act_delivery: DeliveryMethod | None = None
    process_email_received_after: AwareDatetime | None = None
    credentials: LoginPatch | None = None
    outgoing_credentials: LoginPatch | None = None

    @model_validator(mode="after")
    def _not_null(self) -> Self:
        for name in ("email", "owner", "incoming_delivery", "outgoing_delivery", "act_delivery"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class MailboxFilter(Strict):
    profile_id: Identifier | None = None
    approval: Approval | None = None
    incoming_status: TestStatus | None = None
    outgoing_status: TestStatus | None = None
    enabled: bool | None = None
    owner_kind: OwnerKind | None = None
    owner_id: Identifier | None = None
    active: bool | None = True


class Selection(Strict):
    """Which mailboxes a bulk operation touches: a list of ids, a filter, or ``all: true``.

    An empty filter would select every mailbox of the organisation; that must be said with
    ``all: true``, so a client that forgot its filter's fields does not touch everything.
    """

    mailbox_ids: Annotated[list[Identifier], Field(min_length=1, max_length=1000)] | None = None
    all: bool = False
    filter: MailboxFilter | None = None
    smtp_mode: SmtpMode | None = Field(
        None, description="Test & Enable only: the outgoing test's mode (default: the profile's)."
    )

    @field_validator("filter")
    @classmethod
    def _not_empty(cls, value: MailboxFilter | None, info: ValidationInfo) -> MailboxFilter | None:
        if value is not None and not value.model_fields_set and not info.data.get("all"):
            raise ValueError("an empty filter selects every mailbox: give all: true to mean that")
        return value

    @model_validator(mode="after")
    def _one(self) -> Self:
        if self.all:
            if self.mailbox_ids is not None or (self.filter is not None and self.filter.model_fields_set):
                raise ValueError(
                    "all: true selects every active mailbox: give no mailbox_ids or filter with it"
                )
            self.filter = MailboxFilter()
        elif (self.mailbox_ids is None) == (self.filter is None):
            raise ValueError("give exactly one of mailbox_ids, filter or all: true")
        return self


class ListRequest(MailboxFilter):
    limit: Limit = 50
    after: Identifier | None = None


class MailboxRequest(Strict):
    mailbox_id: Identifier


class TestOptions(Strict):
    """What one Test & Enable may choose (HTTP: an optional body)."""

    __test__ = False
    smtp_mode: SmtpMode | None = Field(
        None, description="The outgoing test's mode for this test (default: the profile's)."
    )


class TestRequest(TestOptions, MailboxRequest):
    """Test & Enable one mailbox."""

    __test__ = False


class UpdateRequest(Strict):
    mailbox_id: Identifier
    changes: MailboxPatch


class MultiChanges(Strict):
    profile_id: Identifier | None = None
    incoming_delivery: DeliveryMethod | None = None
    outgoing_delivery: DeliveryMethod | None = None
    act_delivery: DeliveryMethod | None = None

    @model_validator(mode="after")
    def _some(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in ("incoming_delivery", "outgoing_delivery", "act_delivery"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ChangeManyRequest(Strict):
    selection: Selection
    changes: MultiChanges


class JobCreate(Strict):
    profile_id: Identifier


class JobRequest(Strict):
    job_id: Identifier


class RotateRequest(Strict):
    pass


class HistoryRequest(Strict):
    mailbox_id: Identifier
    limit: Limit = 20


# ---- responses -------------------------------------------------------------------------------


class LoginView(BaseModel):
    username: str | None = None
    has_password: bool = False
    password_updated_at: datetime | None = None


class LastError(BaseModel):
    code: str
    message: str
    direction: str | None = None
    count: int = 1
    occurred_at: datetime | None = None


class MailboxView(MailboxBasics):
    """A mailbox as the API shows it: what the events show (the shared fields) and its test state."""

    process_email_received_after: datetime | None
    credentials: LoginView
    outgoing_credentials: LoginView | None
    incoming_status: TestStatus
    outgoing_status: TestStatus
    act_status: TestStatus
    enabled_incoming: bool
    enabled_outgoing: bool
    test_scheduled: bool
    pending_test_id: str | None
    retry_count: int
    postponed_until: datetime | None
    last_test_completed_at: datetime | None
    last_error: LastError | None
    disabled_reason: str | None
    warnings: list[TestWarning]
    version: int
    created_at: datetime
    updated_at: datetime


class MailboxPage(BaseModel):
    items: list[MailboxView]
    next_after: str | None


class Refusal(BaseModel):
    mailbox_id: str
    code: str
    message: str


class BulkResult(BaseModel):
    """Outcome of a synchronous bulk operation: what was done, and what was refused and why."""

    done: list[str] = []
    test_ids: dict[str, str] = {}
    refused: list[Refusal] = []


class TestAccepted(BaseModel):
    __test__ = False
    mailbox_id: str
    test_id: str
    attempt: int


class TestRunView(BaseModel):
    __test__ = False
    test_id: str
    mailbox_id: str
    attempt: int
    job_id: str | None
    outcome: str
    received_at: datetime
    result: TestCompleted


class TestHistory(BaseModel):
    __test__ = False
    items: list[TestRunView]


class JobView(BaseModel):
    job_id: str
    profile_id: str
    state: Literal["running", "cancelled", "completed"]
    total: int
    requested: int
    done: int
    succeeded: int
    failed: dict[str, int]
    refused: dict[str, int]
    created_at: datetime
    finished_at: datetime | None


class RotationReport(BaseModel):
    primary_kid: str
    examined: int
    rotated: dict[str, int]
    already_primary: int
    unreadable: int
    unreadable_mailboxes: list[str]


class LoginRequest(Strict):
    """sync-svc (``sync``, incoming) or sender-svc (``send``, outgoing; ``sent_copy``, incoming, only
    where the profile saves sent copies) asking for a mailbox's login."""

    mailbox_id: Identifier
    direction: Literal["incoming", "outgoing"]
    purpose: Literal["sync", "send", "sent_copy"]


class SealedLogin(BaseModel):
    """The login sealed with the transit ring to purpose, mailbox, direction, host and port, until
    ``not_after``: the asker opens it with exactly that binding (``sealing.open_for_use``)."""

    mailbox_id: str
    direction: str
    purpose: str
    host: str
    port: int
    not_after: datetime
    sealed: SealedSecret
