"""A copy of each sent mail in the mailbox's Sent folder, where its profile says so (IMAP APPEND).

Once ``EmailSent`` is stored, the outcome writer hands the mail over (its bytes); a sweep finds
the copies a stopped process left pending (their bytes built again from the request: the same
Message-ID and Date). The copy logs in with the mailbox's incoming login, which mailbox-svc's
``login`` operation gives sender-svc for purpose ``sent_copy`` only while the profile's
``save_sent_copy`` is on. Once: the folder is searched for the message's Message-ID first, so a
copy made just before a crash, or by a send that was retried, is not appended again. A copier
claims the copy (``sent_copy.token``) so two replicas never make it at the same time.

The result is its own event, :class:`~contracts.outgoing.EmailSentCopy` (saved, or why not): a
copy that fails never changes the sent mail's outcome. Transient failures are tried again after
``MW_SENDER_COPY_RETRY_S``, up to ``MW_SENDER_COPY_ATTEMPTS``; mailbox-svc not answering counts
no attempt.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

from contracts.errors import CATALOG, ErrorCode
from contracts.events import ProfileSnapshot
from contracts.models import IncomingProtocol, MailboxRef, TestError
from contracts.outgoing import EmailSent, EmailSentCopy, SendEmailRequested
from contracts.subjects import SEND_SENT_COPY, send_outcome_subject
from mailwarden_mailnet.dial import Timeouts
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import ImapClient, quote
from mailwarden_mailnet.imap_session import ImapTarget, imap_session
from mailwarden_mailnet.use_login import LoginSource, LoginUnavailable
from mailwarden_runtime.loop import BackgroundLoop
from sender_svc import metrics, mime
from sender_svc.documents import SendDoc
from sender_svc.outbound import Outbound
from sender_svc.store.sends import now

log = logging.getLogger(__name__)
WORKERS = 4


class _Final(Exception):
    """The copy cannot be made: reported failed at once (no retry)."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class SentCopies:
    def __init__(self, out: Outbound, logins: LoginSource) -> None:
        self.out = out
        self.settings = out.settings
        self.stores = out.stores
        self.logins = logins
        self._queue: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
        self._queued: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._sweeper = BackgroundLoop("sender-copies-sweep", self._sweep, out.settings.sender_sweep_s * 5)

    def start(self) -> None:
        self._sweeper.start()
        self._workers = [asyncio.create_task(self._work(), name=f"sent-copy-{i}") for i in range(WORKERS)]

    async def stop(self) -> None:
        await self._sweeper.stop()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    def offer(self, send: str, data: bytes | None) -> None:
        """A sent mail whose copy is pending (``data``: its bytes, when this process has them)."""
        if send not in self._queued:
            self._queued.add(send)
            self._queue.put_nowait((send, data))

    async def _sweep(self) -> bool:
        for send in await self.stores.sends.copies_due(100):
            self.offer(send, None)
        return False

    async def _work(self) -> None:
        while True:
            send, data = await self._queue.get()
            try:
                await self.copy(send, data)
            except Exception:  # the database failed: the claim runs out, the sweep finds it again
                log.exception("copying a sent mail failed; going on", extra={"send_id": send})
            finally:
                self._queued.discard(send)

    async def copy(self, send: str, data: bytes | None) -> None:
        """One attempt at one pending copy (claimed first); its end or its next try is stored."""
        lease_s = 2 * (self.out.timeouts.connect_s + 4 * self.out.timeouts.step_s) + 10
        doc = await self.stores.sends.claim_copy(send, lease_s)
        if doc is None:  # saved, failed, not due, or another copier has it
            return
        attempts = (doc.sent_copy.attempts if doc.sent_copy else 0) + 1
        req = doc.request
        ref: MailboxRef | None = None
        folder = ""
        try:
            ref, profile = await self._where(req.mailbox_id)
            folder = profile.advanced.sent_folder
            data = data or await self._rebuild(doc, req)
            already = await self._append(req.mailbox_id, profile, folder, doc.message_id, data)
        except LoginUnavailable as exc:
            if exc.status == 403:  # mailbox-svc: the profile no longer saves sent copies
                await self._end(doc, attempts, ref, folder, error=(ErrorCode.CREDENTIALS_MISSING, str(exc)))
                return
            log.warning("no login from mailbox-svc for a sent copy", extra={"send_id": send})
            await self.stores.sends.copy_later(doc, attempts - 1, self._later(), str(exc))
            return
        except _Final as exc:
            await self._end(doc, attempts, ref, folder, error=(exc.code, exc.detail))
            return
        except NetError as exc:
            if CATALOG[exc.code].transient and attempts < self.settings.sender_copy_attempts:
                await self.stores.sends.copy_later(
                    doc, attempts, self._later(), f"{exc.code.value}: {exc.detail}"
                )
                return
            if exc.code in (ErrorCode.AUTH_FAILED, ErrorCode.CREDENTIALS_UNREADABLE):
                self.logins.forget(req.mailbox_id)
            await self._end(doc, attempts, ref, folder, error=(exc.code, exc.detail or exc.code.value))
            return
        await self._end(doc, attempts, ref, folder, already=already)

    def _later(self) -> datetime:
        return now() + timedelta(seconds=self.settings.sender_copy_retry_s)

    async def _where(self, mailbox_id: str) -> tuple[MailboxRef, ProfileSnapshot]:
        view = await self.stores.read.mailbox(mailbox_id)
        mbx = view.snapshot if view is not None else None
        found = await self.stores.read.profile(mbx.profile_id) if mbx is not None and mbx.profile_id else None
        if mbx is None or found is None:
            raise _Final(ErrorCode.CREDENTIALS_MISSING, "the mailbox or its profile is gone")
        profile = found[0]
        if not profile.advanced.save_sent_copy:
            raise _Final(ErrorCode.CREDENTIALS_MISSING, "the profile no longer saves sent copies")
        if profile.incoming_protocol is not IncomingProtocol.IMAP:
            raise _Final(ErrorCode.PROTOCOL_MISMATCH, "the incoming server is not IMAP: no Sent folder")
        return mbx.ref(profile), profile

    async def _rebuild(self, doc: SendDoc, req: SendEmailRequested) -> bytes:
        """The mail as it was sent (same Message-ID and Date), built again after a restart."""
        view = await self.stores.read.mailbox(req.mailbox_id)
        assert view is not None and view.snapshot is not None
        built = mime.build(
            req,
            from_email=view.snapshot.email,
            from_name=view.snapshot.owner.name,
            msg_id=doc.message_id,
            date=doc.requested_at,
            attachments=await self.out.attachments.read(req),
        )
        return built.data

    async def _append(
        self, mailbox_id: str, profile: ProfileSnapshot, folder: str, message_id: str, data: bytes
    ) -> bool:
        """APPEND unless the folder holds the message already (by Message-ID); True when it did."""
        ep = profile.incoming
        login = await self.logins.login(mailbox_id, ep.host, ep.port)
        target = ImapTarget(
            endpoint=ep,
            allowed_ports=tuple((await self.stores.read.models.get_settings()).allowed_ports),
            verify_tls=profile.advanced.verify_tls,
            allow_plaintext_auth=profile.advanced.allow_plaintext_auth,
        )
        timeouts = Timeouts(
            connect_s=profile.advanced.connect_timeout_s,
            dns_s=self.out.timeouts.dns_s,
            step_s=self.out.timeouts.step_s,
            data_s=self.out.timeouts.data_s,
        )
        session = imap_session(
            target,
            login,
            policy=self.out.policy,
            resolver=self.out.resolver,
            tls=self.out.tls.for_target,
            timeouts=timeouts,
        )
        async with session as imap, asyncio.timeout(4 * timeouts.step_s):
            if await _holds(imap, folder, message_id):
                return True
            status, rest = await imap.append(folder, data)
            if status == "NO" and b"[TRYCREATE]" in rest.upper():
                await imap.create(folder)
                status, rest = await imap.append(folder, data)
            if status != "OK":
                code = (
                    ErrorCode.SERVER_TEMPORARY_ERROR
                    if b"[UNAVAILABLE]" in rest.upper()
                    else ErrorCode.MESSAGE_REFUSED
                )
                raise NetError(code, f"APPEND {status} {rest[:200].decode('ascii', 'replace')}")
            return False

    async def _end(
        self,
        doc: SendDoc,
        attempts: int,
        ref: MailboxRef | None,
        folder: str,
        *,
        already: bool = False,
        error: tuple[ErrorCode, str] | None = None,
    ) -> None:
        req = doc.request
        stored_ref = ref or _sent_ref(doc)
        if stored_ref is None:  # no reference to report with (never expected: EmailSent had one)
            log.warning("a sent copy ended without a mailbox reference", extra={"send_id": doc.id})
            return
        failure = None
        if error is not None:
            code, detail = error
            failure = TestError.of(code, "sent_copy", detail[:300])
        event = EmailSentCopy(
            mailbox=stored_ref,
            idempotency_key=req.idempotency_key,
            message_id=doc.message_id,
            folder=folder or "-",
            saved=error is None,
            already_there=already,
            error=failure,
            attempts=attempts,
            copied_at=datetime.now(UTC),
        )
        envelope = self.out.envelop(
            event, doc.correlation_id, uuid.uuid5(uuid.UUID(doc.id), "sent_copy"), doc.requested_by
        )
        state = "saved" if error is None else "failed"
        subject = send_outcome_subject(SEND_SENT_COPY, req.mailbox_id)
        if await self.stores.sends.copy_done(doc, state, attempts, envelope, subject):
            metrics.SENT_COPIES.labels(state=state).inc()
            self.out.wake_relay()


async def _holds(imap: ImapClient, folder: str, message_id: str) -> bool:
    """Whether ``folder`` holds a message with this Message-ID (a missing folder is created)."""
    try:
        await imap.select(quote(folder), read_only=True)
    except NetError:
        await imap.create(folder)
        return False
    return bool(await imap.uid_search_header("Message-ID", message_id))


def _sent_ref(doc: SendDoc) -> MailboxRef | None:
    """The mailbox as its EmailSent named it."""
    ended = doc.ended()
    return ended.mailbox if isinstance(ended, EmailSent) else doc.mailbox_ref
