"""Taking a send request in: every check first, then one insert (or the answer already stored).

The same checks serve the event, HTTP and request-reply: the mailbox may send (known, active,
outgoing delivery by server-side sync, approved where the organisation requires it, enabled for
outgoing email by its last test, a login entered), the addresses are deliverable, the attachments
exist, and the message fits the configured size and the size the server last advertised. A
refusal names the field and its catalog code; nothing is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from contracts.eligibility import Ineligible, ineligible
from contracts.errors import ErrorCode
from contracts.events import MailboxSnapshot, ProfileSnapshot
from contracts.models import CredentialSource, Direction, MailboxRef
from contracts.outgoing import SendEmailRequested, send_id
from mailwarden_runtime.http import DomainError
from sender_svc import metrics, mime
from sender_svc.attachments import AttachmentError, ObjectAttachments
from sender_svc.documents import SendDoc
from sender_svc.store import Stores
from sender_svc.store.readmodels import ReadModelStore
from sender_svc.store.sends import fingerprint


class Refused(DomainError):
    """A refused request: HTTP status, the field at fault and the catalog code events carry."""

    def __init__(self, status: int, code: ErrorCode, detail: str, field: str) -> None:
        super().__init__(status, detail, field)
        self.code = code


@dataclass(frozen=True)
class Sendable:
    """A mailbox that may send, with what sending needs (the login itself is asked from mailbox-svc
    when connecting: :mod:`mailwarden_mailnet.use_login`)."""

    mailbox: MailboxSnapshot
    profile: ProfileSnapshot
    ref: MailboxRef
    login_id: str
    """The login's non-secret identity: whose it is and the version it was entered in (a new
    password is a new version), so a refused login is not tried again and connections are not
    shared across logins."""
    allowed_ports: tuple[int, ...]
    login_failed: str | None
    """The ``login_id`` the server last refused, if any."""
    size_limit: int | None
    """The SIZE the profile's outgoing server advertised when last connected."""


REFUSALS: dict[Ineligible, tuple[ErrorCode, str]] = {
    Ineligible.INACTIVE: (ErrorCode.OUTGOING_NOT_ENABLED, "the mailbox is inactive"),
    Ineligible.NOT_SERVER_SIDE_SYNC: (
        ErrorCode.OUTGOING_NOT_ENABLED,
        "the mailbox's outgoing delivery is not server-side synchronization",
    ),
    Ineligible.NOT_APPROVED: (
        ErrorCode.MAILBOX_NOT_APPROVED,
        "the mailbox is not approved (the organisation requires it)",
    ),
    Ineligible.NOT_ENABLED: (
        ErrorCode.OUTGOING_NOT_ENABLED,
        "the mailbox is not enabled for outgoing email (Test & Enable it)",
    ),
}
"""What a sender answers for each reason a mailbox may not send."""


async def sendable(read: ReadModelStore, mailbox_id: str) -> Sendable:
    """The mailbox and what it sends with, or the precise reason it may not send now."""
    view = await read.mailbox(mailbox_id)
    if view is None or view.snapshot is None:
        raise Refused(404, ErrorCode.OUTGOING_NOT_ENABLED, "no such mailbox", "mailbox_id")
    mbx = view.snapshot

    def no(code: ErrorCode, why: str, status: int = 409) -> Refused:
        return Refused(status, code, why, "mailbox_id")

    settings = await read.models.get_settings()
    if (why := ineligible(mbx, Direction.OUTGOING, view.enabled_outgoing, settings)) is not None:
        raise no(*REFUSALS[why])
    found = await read.profile(mbx.profile_id) if mbx.profile_id else None
    if found is None:
        raise no(ErrorCode.OUTGOING_NOT_ENABLED, "the mailbox has no known email server profile")
    profile, size_limit = found
    if not has_login(mbx, profile):
        raise no(ErrorCode.CREDENTIALS_MISSING, "no outgoing login was entered for the mailbox")
    ref = mbx.ref(profile)
    return Sendable(
        mbx,
        profile,
        ref,
        login_id(mbx, profile),
        tuple(settings.allowed_ports),
        view.login_failed,
        size_limit,
    )


def has_login(mailbox: MailboxSnapshot, profile: ProfileSnapshot) -> bool:
    """Whether an outgoing login was entered (mailbox-svc falls back to the incoming one)."""
    if profile.credential_source is CredentialSource.PROFILE:
        return profile.sealed_credentials is not None and profile.sealed_credentials.outgoing is not None
    return mailbox.has_password


def login_id(mailbox: MailboxSnapshot, profile: ProfileSnapshot) -> str:
    """Whose login it is and in which version: a changed mailbox (new password) or profile (new
    shared login, server) is another login. Never derived from the secret or its ciphertext."""
    if profile.credential_source is CredentialSource.PROFILE:
        return f"profile:{profile.profile_id}:v{profile.version}"
    return f"mailbox:{mailbox.mailbox_id}:v{mailbox.version}:profile:{profile.profile_id}:v{profile.version}"


@dataclass(frozen=True)
class Queued:
    """A send just queued by this process, with the message built for its checks: its first
    attempt sends these bytes (no second build) when its mailbox still sends as ``sender``."""

    doc: SendDoc
    built: mime.Built
    sender: tuple[str, str]
    """The From address and display name the message was built with."""


Submitted = tuple[SendDoc, bool] | Refused
"""The stored send and whether its key existed already, or why the request was refused."""
Request = tuple[SendEmailRequested, str | None, str | None]
"""A request with its correlation id and its caller (``token:<sub>``, the envelope's actor)."""


class Submission:
    def __init__(
        self,
        stores: Stores,
        attachments: ObjectAttachments,
        max_bytes: int,
        offer: Callable[[Queued], None],
        clock: Callable[[], datetime],
        owner: str | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.stores = stores
        self.attachments = attachments
        self.max_bytes = max_bytes
        self.offer = offer
        self.owner = owner
        self.hold_s = hold_s
        self.clock = clock

    async def submit(
        self, req: SendEmailRequested, correlation_id: str | None = None, actor: str | None = None
    ) -> tuple[SendDoc, bool]:
        """Queue ``req`` once; returns the stored send and whether it existed already.

        A key submitted before answers that send, even when the request would be refused now."""
        (result,) = await self.submit_many([(req, correlation_id, actor)])
        if isinstance(result, Refused):
            raise result
        return result

    async def submit_many(self, items: list[Request]) -> list[Submitted]:
        """Queue a batch: every check per request (the mailboxes read in one round trip), then one
        insert for all that passed. Each request gets its own answer, in order."""
        await self.stores.read.models.prefetch_mailboxes([req.mailbox_id for req, _, _ in items])
        results: list[Submitted | Queued] = []
        for req, correlation_id, actor in items:
            try:
                results.append(await self._prepare(req, correlation_id, actor))
            except Refused as refusal:
                results.append(refusal)
        queued = [r for r in results if isinstance(r, Queued)]
        existed = await self.stores.sends.insert_sends([q.doc for q in queued])
        answers: list[Submitted] = []
        for (req, _, _), result in zip(items, results, strict=True):
            if isinstance(result, Queued) and result.doc.id not in existed:
                self.offer(result)
                answers.append((result.doc, False))
            else:  # refused, or submitted before (or by a concurrent request that won)
                answers.append(await self._before(req, result if isinstance(result, Refused) else None))
        return answers

    async def _before(self, req: SendEmailRequested, refusal: Refused | None) -> Submitted:
        """The send stored under this key earlier, else the refusal."""
        existing = await self.stores.sends.send(req.mailbox_id, req.idempotency_key)
        if existing is not None:
            try:
                return self._same(existing, req), True
            except Refused as other:
                return other
        assert refusal is not None, "a duplicate key without a stored send"
        metrics.REFUSED.labels(error_code=refusal.code.value).inc()
        return refusal

    def _same(self, existing: SendDoc, req: SendEmailRequested) -> SendDoc:
        if existing.fingerprint != fingerprint(req):
            raise Refused(
                409,
                ErrorCode.MESSAGE_REFUSED,
                "this idempotency key was used for a different message",
                "idempotency_key",
            )
        return existing

    async def _prepare(
        self, req: SendEmailRequested, correlation_id: str | None, actor: str | None
    ) -> Queued:
        """Every check; the send as it will be inserted, and its message."""
        target = await sendable(self.stores.read, req.mailbox_id)
        try:
            object_sizes = await self.attachments.sizes(req)
        except AttachmentError as exc:
            raise Refused(422, ErrorCode.ATTACHMENT_UNAVAILABLE, str(exc), exc.field) from None
        msg_id = mime.message_id(send_id(req.mailbox_id, req.idempotency_key), target.mailbox.email)
        inline = {i: a.inline_bytes() or b"" for i, a in enumerate(req.attachments)}
        at = self.clock()
        sender = (target.mailbox.email, target.mailbox.owner.name)
        try:
            built = mime.build(
                req, from_email=sender[0], from_name=sender[1], msg_id=msg_id, date=at, attachments=inline
            )
        except mime.AddressError as exc:
            raise Refused(422, ErrorCode.RECIPIENT_REFUSED, str(exc), exc.field) from None
        size = mime.estimated_size(len(built.data), object_sizes)
        self._fits(size, self.max_bytes, "the configured limit")
        if target.size_limit:
            self._fits(size, target.size_limit, "the server's advertised SIZE")
        doc = self.stores.sends.new_send(
            req, msg_id, size, correlation_id, at, self.owner, self.hold_s, actor
        )
        return Queued(doc, built, sender)

    @staticmethod
    def _fits(size: int, limit: int, what: str) -> None:
        if size > limit:
            raise Refused(
                422,
                ErrorCode.MESSAGE_TOO_LARGE,
                f"the message is about {size} bytes; {what} is {limit}",
                "attachments",
            )


def refusal_id(mailbox_id: str, key: str) -> uuid.UUID:
    """The event id of a refusal: one per (mailbox, key), so a redelivered request refuses once."""
    return uuid.uuid5(send_id(mailbox_id, key), "refused")
