"""The stored documents of mailbox-svc, typed, and what the API and the events show of them (never a secret)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from contracts.events import Approval, MailboxBasics, MailboxSnapshot, TestCompleted
from contracts.jobs import JobProgress
from contracts.models import DeliveryMethod, Owner, SealedSecret, TestStatus, TestWarning
from mailbox_svc.credentials import INCOMING, OUTGOING, StoredLogin, open_login, seal_login
from mailbox_svc.models import LastError, LoginPatch, LoginView, MailboxCreate, MailboxView
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.documents import Stored

CLIENT_FIELDS = (
    "email",
    "profile_id",
    "incoming_delivery",
    "outgoing_delivery",
    "act_delivery",
    "process_email_received_after",
)
"""The fields a client sets as given (credentials and owner aside)."""

Shown = TypeVar("Shown", bound=MailboxBasics)


class PendingTest(BaseModel):
    """What a mailbox records when a test is requested (``testing.pending_test``), so only that
    test's result applies; the result's :class:`TestState` clears it."""

    pending_test_id: str | None = None
    """The test whose result alone applies (see handlers.py)."""
    pending_attempt: int | None = None
    pending_job_id: str | None = None
    pending_directions: list[str] = Field(default_factory=list)
    test_scheduled: bool = False
    next_retry_at: datetime | None = None
    watchdog_resends: int = 0
    """How often the watchdog sent the pending test again, finding no stored result (scheduler.py)."""
    retry_attempt: int | None = None
    retry_directions: list[str] = Field(default_factory=list)


class TestState(PendingTest):
    """What a test's result sets on its mailbox (``policy.decide``): the statuses, enabled flags,
    the retry if any, the last error, and no test pending any more."""

    __test__ = False
    incoming_status: TestStatus = TestStatus.NOT_RUN
    outgoing_status: TestStatus = TestStatus.NOT_RUN
    enabled_incoming: bool = False
    enabled_outgoing: bool = False
    retry_count: int = 0
    last_test_id: str | None = None
    last_test_completed_at: datetime | None = None
    last_error: LastError | None = None
    disabled_reason: str | None = None
    warnings: list[TestWarning] = Field(default_factory=list)


class MailboxDoc(Stored, TestState):
    """A stored mailbox: its settings, sealed logins, and the state of its tests (:class:`TestState`)."""

    email: str
    owner: Owner
    profile_id: str | None = None
    incoming_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC
    outgoing_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC
    act_delivery: DeliveryMethod = DeliveryMethod.NONE
    process_email_received_after: datetime | None = None
    approval: Approval = "pending"
    active: bool = True
    credentials: dict[str, SealedSecret | None] = Field(default_factory=dict)
    """Per direction, the login sealed with the at-rest ring (``credentials.seal_login``)."""
    logins: dict[str, StoredLogin | None] = Field(default_factory=dict)
    act_status: TestStatus = TestStatus.NOT_APPLICABLE
    tests_reset_at: datetime | None = None
    """When the mailbox last started untested (its server changed, deactivated): a job's test
    requested before then no longer applies (a job's tests are not recorded on the mailbox)."""
    version: int = 1
    created_at: datetime
    updated_at: datetime
    created_by: str = ""
    """Who made it and who changed it last: the audit."""
    updated_by: str = ""

    def login(self, direction: str) -> StoredLogin | None:
        return self.logins.get(direction)

    def sealed(self, direction: str) -> SealedSecret | None:
        return self.credentials.get(direction)

    def _shown(self, shown: type[Shown], /, **own: object) -> Shown:
        """This mailbox as ``shown`` (the API's view, the events' snapshot): what every view shows
        (:class:`MailboxBasics`, kept under the same names here) and ``own``, that view's own fields."""
        return shown.model_validate({"mailbox_id": self.id, **{k: getattr(self, k) for k in _BASICS}, **own})

    def snapshot(self) -> MailboxSnapshot:
        return self._shown(
            MailboxSnapshot,
            has_password=self.sealed(INCOMING) is not None,
            process_email_received_after=self.process_email_received_after,
            version=self.version,
            updated_at=self.updated_at,
        )

    def view(self) -> MailboxView:
        return self._shown(
            MailboxView,
            **{k: getattr(self, k) for k in _VIEWED},
            credentials=self._login_view(INCOMING) or LoginView(),
            outgoing_credentials=self._login_view(OUTGOING),
            # While a test is pending the field is that test's watchdog, not a next test.
            postponed_until=None if self.pending_test_id else self.next_retry_at,
        )

    def _login_view(self, direction: str) -> LoginView | None:
        login = self.login(direction)
        if login is None:
            return None
        return LoginView(
            username=login.username,
            has_password=self.sealed(direction) is not None,
            password_updated_at=login.password_updated_at,
        )


_BASICS = tuple(k for k in MailboxBasics.model_fields if k != "mailbox_id")
_VIEWED = tuple(
    k
    for k in MailboxView.model_fields
    if k in MailboxDoc.model_fields and k not in MailboxBasics.model_fields and k != "credentials"
)
"""The view's own fields kept under the same name in the document."""


class MailboxEmail(Stored):
    """Only a mailbox's address: what "who am I" lists of the caller's own mailboxes."""

    email: str = ""


class SealedLogins(Stored):
    """Only a mailbox's sealed logins: what key rotation reads and swaps."""

    credentials: dict[str, SealedSecret | None] = Field(default_factory=dict)


class MailboxLastTest(Stored):
    """Only a mailbox's last applied test (its profile and the test it waits on when read by id):
    what a job's stored results are checked against."""

    profile_id: str | None = None
    last_test_id: str | None = None
    pending_test_id: str | None = None


class MailboxProfile(Stored):
    """Only a mailbox's profile: what a bulk selection's profiles are read from."""

    profile_id: str | None = None


class SyncPaused(Stored):
    """A mailbox whose sync an operator paused (``_id`` the mailbox id; collection ``sync_paused``):
    the scheduled re-tests take it on (retests.py). Deleted when the sync resumes."""

    at: datetime
    """When it was paused (the event's time)."""


class TestRunDoc(Stored):
    """One test's result as received (``_id`` the test id): the mailbox's history and its job's counts."""

    __test__ = False
    mailbox_id: str
    attempt: int
    job_id: str | None = None
    outcome: str
    disabled_reason: str | None = None
    received_at: datetime
    result: TestCompleted
    """The event as received (stored as JSON)."""


class RunBatchDoc(Stored):
    """A stored batch of test runs (collection ``test_run_batches``, see ``store/runs.py``): the
    runs received together, at most one per mailbox, each unique by its test id across batches."""

    received_at: datetime
    runs: list[TestRunDoc]


JobState = Literal["running", "cancelled", "completed"]


class JobDoc(Stored):
    """A Test & Enable job over a profile's mailboxes, expanded in batches (see jobs.py).

    Stored once at its start and written again when it ends; its expansion (``expanded`` to
    ``lease_until``) is its batch records (:class:`JobBatchDoc`) laid over what the document
    holds (jobexpansion.py): a job stored before those records continues from its own fields.
    """

    profile_id: str
    state: JobState = "running"
    expanded: bool = False
    cursor: str | None = None
    """The last mailbox id requested: where the expansion goes on."""
    total: int
    requested: int = 0
    refused: dict[str, int] = Field(default_factory=dict)
    created_at: datetime
    created_by: str = ""
    """Who started it (``token:<sub>`` / ``jwt:<sub>``); ``cancelled_by``: who cancelled it."""
    cancelled_by: str | None = None
    finished_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    summary: JobProgress | None = None
    """The final counts, once completed; while it runs they are counted from its runs (jobresults.py)."""


class CancelledJob(Stored):
    """Only when a cancelled job ended: a result of its tests received after that is withdrawn."""

    finished_at: datetime


class JobBatchDoc(Stored):
    """One expanded batch of a job, inserted once its TestRequested events are stored (``_id``
    ``<job>/<seq>``, unique: of two replicas expanding the same batch, one records it)."""

    job_id: str
    seq: int
    cursor: str | None
    """The last mailbox id of the batch (the job's cursor after it)."""
    requested: int = 0
    refused: dict[str, int] = Field(default_factory=dict)
    expanded: bool = False
    """The last record of a job: no mailbox was left to request."""
    by: str
    """The instance that expanded it: it holds the job's lease for LEASE_S after ``at``."""
    at: datetime

    @staticmethod
    def key(job_id: str, seq: int) -> str:
        return f"{job_id}/{seq:08d}"


def new_mailbox_id() -> str:
    return f"mbx_{uuid.uuid4().hex[:16]}"


def new_mailbox(
    req: MailboxCreate, ring: KeyRing, now: datetime, destination: str | None, actor: str
) -> MailboxDoc:
    """A new mailbox; its logins record ``destination``, the fingerprint of the profile's server."""
    mailbox_id = req.mailbox_id or new_mailbox_id()
    credentials: dict[str, SealedSecret | None] = {}
    logins: dict[str, StoredLogin | None] = {}
    for direction, login in ((INCOMING, req.credentials), (OUTGOING, req.outgoing_credentials)):
        if login is not None:
            credentials[direction] = seal_login(ring, mailbox_id, direction, login.username, login.password)
            logins[direction] = StoredLogin(
                username=login.username, password_updated_at=now, destination=destination
            )
    return MailboxDoc(
        id=mailbox_id,
        email=req.email,
        owner=req.owner,
        profile_id=req.profile_id,
        incoming_delivery=req.incoming_delivery,
        outgoing_delivery=req.outgoing_delivery,
        act_delivery=req.act_delivery,
        process_email_received_after=req.process_email_received_after,
        credentials=credentials,
        logins=logins,
        created_at=now,
        updated_at=now,
        created_by=actor,
        updated_by=actor,
    )


def patch_login(
    ring: KeyRing,
    doc: MailboxDoc,
    direction: str,
    patch: LoginPatch | None,
    now: datetime,
    destination: str | None,
    stored_usable: bool,
) -> tuple[SealedSecret | None, StoredLogin | None]:
    """New (ciphertext, login) of one direction; ``patch`` None removes the login.

    A stored password is carried over only while ``stored_usable`` (the server it was entered for
    is still the profile's): otherwise the request must give the password again.
    """
    if patch is None:
        return None, None
    stored = doc.sealed(direction)
    old_user: str | None = None
    old_password = None
    if stored is not None and (patch.username is None or patch.password is None):
        old_user, old_password = open_login(ring, doc.id, direction, stored)
        if not stored_usable:
            old_password = None
    username = patch.username or old_user
    password = patch.password or old_password
    if username is None:
        raise ValueError("username")
    if password is None:
        raise ValueError("password")
    login = doc.login(direction) or StoredLogin()
    changed_at = now if patch.password is not None else (login.password_updated_at or now)
    return (
        seal_login(ring, doc.id, direction, username, password),
        StoredLogin(
            username=username,
            password_updated_at=changed_at,
            destination=destination if patch.password is not None or stored_usable else None,
        ),
    )
