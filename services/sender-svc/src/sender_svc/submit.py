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
from mailwarden_runtime.mongo import Document
from sender_svc import metrics, mime
from sender_svc.attachments import AttachmentError, ObjectAttachments
from sender_svc.repository import Repository, fingerprint


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


async def sendable(repo: Repository, mailbox_id: str) -> Sendable:
    """The mailbox and what it sends with, or the precise reason it may not send now."""
    view = await repo.mailbox(mailbox_id)
    if view is None or view.snapshot is None:
        raise Refused(404, ErrorCode.OUTGOING_NOT_ENABLED, "no such mailbox", "mailbox_id")
    mbx = view.snapshot

    def no(code: ErrorCode, why: str, status: int = 409) -> Refused:
        return Refused(status, code, why, "mailbox_id")

    settings = await repo.read.get_settings()
    if (why := ineligible(mbx, Direction.OUTGOING, view.enabled_outgoing, settings)) is not None:
        raise no(*REFUSALS[why])
    found = await repo.profile(mbx.profile_id) if mbx.profile_id else None
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


class Submission:
    def __init__(
        self,
        repo: Repository,
        attachments: ObjectAttachments,
        max_bytes: int,
        offer: Callable[[str, str, Document], None],
        clock: Callable[[], datetime],
        owner: str | None = None,
        hold_s: float = 0.0,
    ) -> None:
        self.repo = repo
        self.attachments = attachments
        self.max_bytes = max_bytes
        self.offer = offer
        self.owner = owner
        self.hold_s = hold_s
        self.clock = clock

    async def submit(
        self, req: SendEmailRequested, correlation_id: str | None = None
    ) -> tuple[Document, bool]:
        """Queue ``req`` once; returns the stored send and whether it existed already.

        A key submitted before answers that send, even when the request would be refused now."""
        try:
            return await self._queue(req, correlation_id)
        except Refused as refusal:
            existing = await self.repo.send(req.mailbox_id, req.idempotency_key)
            if existing is not None:
                return self._same(existing, req), True
            metrics.REFUSED.labels(error_code=refusal.code.value).inc()
            raise

    def _same(self, existing: Document, req: SendEmailRequested) -> Document:
        if existing["fingerprint"] != fingerprint(req):
            raise Refused(
                409,
                ErrorCode.MESSAGE_REFUSED,
                "this idempotency key was used for a different message",
                "idempotency_key",
            )
        return existing

    async def _queue(self, req: SendEmailRequested, correlation_id: str | None) -> tuple[Document, bool]:
        target = await sendable(self.repo, req.mailbox_id)
        try:
            object_sizes = await self.attachments.sizes(req)
        except AttachmentError as exc:
            raise Refused(422, ErrorCode.ATTACHMENT_UNAVAILABLE, str(exc), exc.field) from None
        msg_id = mime.message_id(send_id(req.mailbox_id, req.idempotency_key), target.mailbox.email)
        inline = {i: a.inline_bytes() or b"" for i, a in enumerate(req.attachments)}
        try:
            built = mime.build(
                req,
                from_email=target.mailbox.email,
                from_name=target.mailbox.owner.name,
                msg_id=msg_id,
                date=self.clock(),
                attachments=inline,
            )
        except mime.AddressError as exc:
            raise Refused(422, ErrorCode.RECIPIENT_REFUSED, str(exc), exc.field) from None
        size = mime.estimated_size(len(built.data), object_sizes)
        self._fits(size, self.max_bytes, "the configured limit")
        if target.size_limit:
            self._fits(size, target.size_limit, "the server's advertised SIZE")
        doc = await self.repo.insert_send(req, msg_id, size, correlation_id, self.owner, self.hold_s)
        if doc is None:  # submitted before (or by a concurrent request that won)
            stored = await self.repo.send(req.mailbox_id, req.idempotency_key)
            assert stored is not None
            return self._same(stored, req), True
        self.offer(req.mailbox_id, doc["_id"], doc)
        return doc, False

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
