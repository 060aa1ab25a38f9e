"""The send loop: claim a due message, send it over a (reused) connection, store the outcome.

Never a duplicate: 'sending' is stored, under this claim's token, before DATA; only one claim can
make that step. A message whose sender dies after it and before the outcome is stored stays in
'sending' until its lease ends, then :meth:`Sender.recover` reports it uncertain, never resends.
Transient failures (4xx, connection lost, timeouts) go back to the queue with a stored backoff;
permanent ones and the last attempt are final. An ``auth_failed`` is final too, published for
mailbox-svc's retry-or-disable policy, and the same login (by its identity, ``submit.login_id``)
is not tried again. Logins are asked from mailbox-svc's ``login`` operation when a connection is
opened (:class:`~mailwarden_mailnet.use_login.LoginSource`); mailbox-svc not answering is ours,
not the mailbox's: the message waits, no attempt is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.errors import CATALOG, ErrorCode
from contracts.events import Event
from contracts.models import MailboxRef, TestError
from contracts.outgoing import (
    EmailSendFailed,
    EmailSendUncertain,
    EmailSent,
    MailboxSendLoginRefused,
    RecipientRefusal,
    SendEmailRequested,
)
from contracts.subjects import SEND_FAILED, SEND_SENT, SEND_UNCERTAIN, send_outcome_subject
from mailwarden_mailnet.dial import Timeouts
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.smtp import DataUncertain, Reply, SmtpRefused, SmtpTarget, open_smtp
from mailwarden_mailnet.use_login import LoginSource, LoginUnavailable
from mailwarden_runtime.loop import BackgroundLoop
from mailwarden_runtime.sharedkv import KvUnavailable
from sender_svc import metrics, mime
from sender_svc.candidates import Candidates
from sender_svc.documents import Partial, SendDoc, SendOutcome, StoredError
from sender_svc.limits import SharedLimits
from sender_svc.outbound import Outbound
from sender_svc.outcomes import OutcomeWriter
from sender_svc.pool import ConnectionPool, Session
from sender_svc.store.sends import Finish, now
from sender_svc.submit import Queued, Refused, Sendable, sendable

log = logging.getLogger(__name__)


class _ClaimLost(Exception):
    """Another sender took the message before DATA: leave it alone."""


@dataclass
class _Attempt:
    doc: SendDoc
    req: SendEmailRequested
    queued: Queued | None = None
    """The message built when this process queued it (its first attempt sends those bytes)."""
    data: bytes | None = None
    """The bytes this attempt sends (kept for the Sent-folder copy)."""
    target: Sendable | None = None
    data_started: bool = False
    step: str = "prepare"
    refused_before: bool = False
    """The login was refused by an earlier send: not tried, not reported again."""


class RateLimiter:
    """Per-mailbox token bucket: ``per_minute`` with bursts of ``burst`` (this process's share)."""

    def __init__(self, per_minute: float, burst: float) -> None:
        self.rate_s = per_minute / 60.0
        self.burst = max(1.0, burst)
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when a message may go now (a token is taken), else the seconds until one may."""
        t = time.monotonic()
        tokens, at = self._tokens.get(key, (self.burst, t))
        tokens = min(self.burst, tokens + (t - at) * self.rate_s)
        if tokens >= 1.0:
            self._tokens[key] = (tokens - 1.0, t)
            return 0.0
        self._tokens[key] = (tokens, t)
        return (1.0 - tokens) / self.rate_s

    def try_take(self, key: str) -> bool:
        """Take a token when one is there (no await between the check and the take)."""
        return self.take(key) == 0.0

    def hold(self, key: str, seconds: float) -> None:
        """No token for ``key`` for ``seconds`` (the shared bucket said so)."""
        self._tokens[key] = (1.0 - seconds * self.rate_s, time.monotonic())

    def refund(self, key: str) -> None:
        """Give back a token taken for a message that was not sent after all."""
        tokens, at = self._tokens.get(key, (self.burst, time.monotonic()))
        self._tokens[key] = (min(self.burst, tokens + 1.0), at)


def refusals(items: list[tuple[str, Reply]]) -> list[RecipientRefusal]:
    return [
        RecipientRefusal(
            address=address,
            reply_code=reply.code,
            enhanced_code=reply.enhanced,
            message=reply.text,
            permanent=reply.code >= 500,
        )
        for address, reply in items
    ]


class Sender:
    def __init__(
        self,
        out: Outbound,
        logins: LoginSource,
        owner: str,
        shared: SharedLimits | None = None,
        copy_sent: Callable[[str, bytes | None], None] | None = None,
    ) -> None:
        self.out = out
        self.settings = out.settings
        self.stores = out.stores
        self.logins = logins
        self.owner = owner
        self.shared = shared
        settings = out.settings
        self.pool = ConnectionPool(settings.sender_idle_keep_s, shared.leases if shared else None)
        self.rate = RateLimiter(settings.sender_rate_per_minute, settings.sender_rate_burst)
        self.candidates = Candidates()
        self._sweeper = BackgroundLoop("sender-sweep", self._sweep, settings.sender_sweep_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._recovery = BackgroundLoop(
            "sender-recovery", self._recover_pass, min(5.0, settings.sender_lease_s / 2)
        )
        self._stopping = False
        self._sizes: dict[str, int | None] = {}
        self.copy_sent = copy_sent
        """Hands a stored sent mail to the Sent-folder copier (:mod:`sender_svc.sent_copy`)."""
        self.outcomes = OutcomeWriter(out.stores.sends, out.wake_relay, self._stored)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.outcomes.start()
        self.pool.start()
        self._recovery.start()
        self._sweeper.start()
        for i in range(self.settings.sender_concurrency):
            self._tasks.append(asyncio.create_task(self._work(), name=f"sender-{i}"))

    def stopping(self) -> None:
        """No new claims; messages being sent finish (within the service's grace)."""
        self._stopping = True
        self.candidates.changed.set()

    async def stop(self, grace_s: float) -> None:
        self.stopping()
        started = time.monotonic()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        await self.outcomes.stop(max(0.5, grace_s - (time.monotonic() - started)))
        await self._recovery.stop()
        await self._sweeper.stop()
        await self.pool.close()

    # --- the loop ------------------------------------------------------------------------------
    async def _work(self) -> None:
        prefer: str | None = None
        while not self._stopping:
            try:
                prefer = await self._one(prefer)
            except Exception:  # the database or NATS failed: the message stays claimed until its lease ends
                log.exception("sending loop failed; going on")
                prefer = None
                await asyncio.sleep(self.settings.sender_poll_s)

    async def _one(self, prefer: str | None) -> str | None:
        """Claim and send one message; returns the mailbox to prefer next (its connection is warm)."""
        item = self.candidates.take(prefer, self.rate.try_take)  # a token is taken with the item
        if item is None:
            self.candidates.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.candidates.changed.wait(), self.settings.sender_poll_s)
            return None
        mailbox_id, send = item
        self.candidates.busy(mailbox_id, +1)
        try:
            return await self._claim_and_send(mailbox_id, send, prefer)
        finally:
            self.candidates.busy(mailbox_id, -1)

    async def _claim_and_send(self, mailbox_id: str, send: str, prefer: str | None) -> str | None:
        wait = await self._shared_rate(mailbox_id)
        if wait > 0:  # the mailbox's rate is spent across the replicas: back in line until then
            self.rate.hold(mailbox_id, wait)
            self.candidates.add(mailbox_id, send, self.candidates.held(send))
            metrics.RATE_WAITS.inc()
            return None
        queued = self.candidates.held(send)
        doc = queued.doc if queued is not None else None
        if doc is None or doc.lease_until <= now() + timedelta(seconds=1):
            queued, doc = None, await self.stores.sends.claim(send, self.owner, self.settings.sender_lease_s)
        if doc is None:  # sent, taken by another sender, or not due: the hint was stale
            self.rate.refund(mailbox_id)
            return prefer
        await self.process(doc, queued)
        return mailbox_id

    async def _shared_rate(self, mailbox_id: str) -> float:
        """0 when the mailbox may send now across every replica (a token taken), else how long to wait."""
        if self.shared is None:
            return 0.0
        try:
            return await self.shared.rate.take(mailbox_id)
        except KvUnavailable:
            return 0.0  # this process's bucket holds alone meanwhile (logged by the KV layer)

    def offer(self, queued: Queued) -> None:
        """A send just queued here (inserted claimed for this process): a hint for the next free
        loop (the sweep finds the others)."""
        self.candidates.add(queued.doc.mailbox_id, queued.doc.id, queued)

    async def _sweep(self) -> bool:
        if len(self.candidates) < 4 * self.settings.sender_concurrency:
            for mailbox_id, send in await self.stores.sends.due(1000):
                self.candidates.add(mailbox_id, send)
        return False

    async def process(self, doc: SendDoc, queued: Queued | None = None) -> None:
        """One attempt at one claimed message; every way it can end is stored."""
        attempt = _Attempt(doc, doc.request, queued)
        try:
            await self._attempt(attempt)
        except _ClaimLost:
            log.info("message taken by another sender before DATA", extra={"send_id": doc.id})
        except asyncio.CancelledError:
            if not attempt.data_started:  # nothing handed over: free it for another sender now
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.stores.sends.postpone(doc, now()))
            raise
        except DataUncertain as exc:
            await self._uncertain(attempt, f"no reply after the message was sent ({exc.code.value})")
        except Refused as exc:
            await self._failed(attempt, exc.code, exc.detail)
        except LoginUnavailable as exc:  # mailbox-svc did not answer: not the mailbox's failure
            log.warning("no login from mailbox-svc", extra={"send_id": doc.id, "error": str(exc)})
            until = now() + timedelta(seconds=self.settings.sender_backoff_s)
            error = StoredError(code="login_unavailable", detail=str(exc)[:300])
            await self.stores.sends.retry_later(doc, until, error, count=False)
        except NetError as exc:
            await self._net_error(attempt, exc)
        except Exception as exc:
            log.exception("sending failed unexpectedly", extra={"send_id": doc.id})
            if attempt.data_started:
                await self._uncertain(attempt, f"the sender failed after DATA ({type(exc).__name__})")
            else:
                await self._net_error(attempt, NetError(ErrorCode.INTERNAL_ERROR, type(exc).__name__))

    async def _attempt(self, attempt: _Attempt) -> None:
        doc, req = attempt.doc, attempt.req
        target = attempt.target = await sendable(self.stores.read, req.mailbox_id)
        if target.login_failed == target.login_id:
            attempt.refused_before = True
            raise NetError(
                ErrorCode.AUTH_FAILED, "this login was refused before; waiting for new credentials"
            )
        built = await self._message(attempt, target)
        attempt.data = built.data
        if len(built.data) > self.settings.sender_max_message_bytes:
            raise NetError(ErrorCode.MESSAGE_TOO_LARGE, f"{len(built.data)} bytes")
        sender_address, _ = mime.ascii_domain(target.mailbox.email, "mailbox_id")
        partial = doc.partial
        rcpts = [r.address for r in partial.deferred] if partial else []
        rcpts = rcpts or built.recipients  # the 4xx ones, on a retry
        attempt.step = "connect"
        session = await self._session(target)

        async def before_data() -> None:
            if not await self.stores.sends.mark_sending(doc, self.settings.sender_lease_s, target.ref):
                raise _ClaimLost
            attempt.data_started = True
            attempt.step = "data"

        keep = False
        try:
            attempt.step = "envelope"
            try:
                tx = await session.conn.send(
                    sender_address, rcpts, built.data, utf8=built.utf8, before_data=before_data
                )
            except NetError as exc:
                if not (session.reused and not attempt.data_started and not isinstance(exc, SmtpRefused)):
                    keep = isinstance(exc, SmtpRefused) and not session.conn.closed
                    raise
                # An idle connection the server had dropped: once more on a fresh one.
                await self.pool.release(session, keep=False)
                session = await self._session(target, fresh=True)
                tx = await session.conn.send(
                    sender_address, rcpts, built.data, utf8=built.utf8, before_data=before_data
                )
            keep = True
        finally:
            with contextlib.suppress(Exception):
                await self.pool.release(session, keep and not session.conn.closed)
        assert tx.final is not None
        accepted = [*(partial.accepted if partial else []), *tx.accepted]
        refused = list(partial.refused) if partial else []
        reply = partial.reply if partial else str(tx.final)
        now_refused = refusals(tx.refused)
        later = [r for r in now_refused if not r.permanent]
        if later and self._attempts(attempt) < self.settings.sender_max_attempts:
            # Accepted recipients have it; only the ones refused with 4xx are tried again.
            kept = Partial(
                accepted=accepted,
                refused=[r for r in (*refused, *now_refused) if r.permanent],
                deferred=later,
                reply=reply,
                size=len(built.data),
            )
            detail = f"{len(later)} recipient(s) deferred (4xx)"
            error = StoredError(code=ErrorCode.RECIPIENT_REFUSED.value, detail=detail)
            await self.stores.sends.retry_later(
                doc, now() + self._backoff(attempt), error, count=False, partial=kept
            )
            metrics.RETRIES.labels(error_code=ErrorCode.RECIPIENT_REFUSED.value).inc()
            return
        await self._sent(attempt, accepted, [*refused, *now_refused], reply, len(built.data))

    async def _message(self, attempt: _Attempt, target: Sendable) -> mime.Built:
        """The bytes to send: built when this process queued it, unless the message needs
        Object Store attachments (only their sizes were known then) or the mailbox's address or
        name changed since; else built again from the request, to the same bytes."""
        sender = (target.mailbox.email, target.mailbox.owner.name)
        queued, req = attempt.queued, attempt.req
        if queued is not None and queued.sender == sender and all(a.object is None for a in req.attachments):
            return queued.built
        return mime.build(
            req,
            from_email=sender[0],
            from_name=sender[1],
            msg_id=attempt.doc.message_id,
            date=attempt.doc.requested_at,
            attachments=await self.out.attachments.read(req),
        )

    async def _session(self, target: Sendable, fresh: bool = False) -> Session:
        ep = target.profile.outgoing
        adv = target.profile.advanced
        host = f"{ep.host}:{ep.port}"
        key = f"{host}|{target.mailbox.mailbox_id}|{target.login_id}"
        smtp_target = SmtpTarget(
            endpoint=ep,
            allowed_ports=target.allowed_ports,
            verify_tls=adv.verify_tls,
            allow_plaintext_auth=adv.allow_plaintext_auth,
        )
        timeouts = Timeouts(
            connect_s=adv.connect_timeout_s,
            dns_s=self.out.timeouts.dns_s,
            step_s=self.out.timeouts.step_s,
            data_s=self.out.timeouts.data_s,
        )

        async def opener() -> Any:
            login = await self.logins.login(target.mailbox.mailbox_id, ep.host, ep.port)
            conn = await open_smtp(
                smtp_target,
                login,
                policy=self.out.policy,
                resolver=self.out.resolver,
                tls=self.out.tls.for_target,
                ehlo_name=self.settings.sender_ehlo_name,
                timeouts=timeouts,
            )
            if conn.size_limit != self._sizes.get(host):
                await self.stores.read.remember_size(ep.host, ep.port, conn.size_limit)
                self._sizes[host] = conn.size_limit
            return conn

        if fresh:
            key += f"|{uuid.uuid4().hex}"  # never handed an idle connection
        try:
            async with asyncio.timeout(self.settings.sender_lease_s / 2):
                return await self.pool.acquire(key, host, adv.max_concurrent_connections, opener)
        except TimeoutError:
            raise NetError(ErrorCode.STEP_TIMEOUT, "no free connection to the server in time") from None

    # --- outcomes ------------------------------------------------------------------------------
    def _stored(self, batch: list[Finish]) -> None:
        if self.copy_sent is not None:
            for finish in batch:
                if finish.copy is not None:
                    self.copy_sent(finish.send, finish.copy or None)

    def _ids(self, doc: SendDoc, outcome: str) -> uuid.UUID:
        return uuid.uuid5(uuid.UUID(doc.id), outcome)

    def _attempts(self, attempt: _Attempt) -> int:
        # mark_sending counted this attempt in the database; before DATA it is counted here.
        return attempt.doc.attempts + 1

    async def _store(
        self,
        attempt: _Attempt,
        status: str,
        event: SendOutcome,
        subject: str,
        also: tuple[Event, ...] = (),
        copy: bytes | None = None,
    ) -> None:
        """Hand the outcome to the writer (stored in its next batch; the loop goes on at once).
        With ``also`` (a refused login to report) it is stored before this returns: what follows
        (the refused-login mark) must never be stored without it."""
        doc = attempt.doc
        cid = doc.correlation_id
        envelope = self.out.envelop(event, cid, self._ids(doc, status), doc.requested_by)
        more = tuple(self.out.envelop(e, cid, self._ids(doc, e.TYPE), doc.requested_by) for e in also)
        attempts = self._attempts(attempt)
        finish = Finish(doc.id, doc.lease_token or "", status, attempts, event, envelope, subject, more, copy)
        if not also:
            self.outcomes.put(finish)
        elif await self.stores.sends.finish_many([finish]):
            self.out.wake_relay()
        else:
            log.warning(
                "outcome not stored: the message was taken from this sender", extra={"send_id": doc.id}
            )

    async def _sent(
        self, attempt: _Attempt, accepted: list[str], refused: list[RecipientRefusal], reply: str, size: int
    ) -> None:
        doc, req = attempt.doc, attempt.req
        assert attempt.target is not None
        sent_at = datetime.now(UTC)
        event = EmailSent(
            mailbox=attempt.target.ref,
            idempotency_key=req.idempotency_key,
            message_id=doc.message_id,
            accepted=accepted,
            refused=refused,
            reply=reply[:300],
            size=size,
            attempts=self._attempts(attempt),
            requested_at=doc.requested_at,
            sent_at=sent_at,
        )
        # The copy to the Sent folder, where the profile asks for one (b"": built again by the copier).
        copy = (attempt.data or b"") if attempt.target.profile.advanced.save_sent_copy else None
        await self._store(attempt, "sent", event, send_outcome_subject(SEND_SENT, req.mailbox_id), copy=copy)
        metrics.SENT.inc()
        metrics.SEND_SECONDS.observe((sent_at - doc.requested_at).total_seconds())

    async def _failed(
        self,
        attempt: _Attempt,
        code: ErrorCode,
        detail: str,
        reply: Reply | None = None,
        refused: list[RecipientRefusal] | None = None,
    ) -> None:
        doc, req = attempt.doc, attempt.req
        error = TestError.of(code, attempt.step, detail[:300])
        event = EmailSendFailed(
            mailbox_id=req.mailbox_id,
            mailbox=attempt.target.ref if attempt.target else doc.mailbox_ref,
            idempotency_key=req.idempotency_key,
            message_id=doc.message_id,
            error=error,
            reply_code=reply.code if reply else None,
            enhanced_code=reply.enhanced if reply else None,
            refused=refused or [],
            attempts=self._attempts(attempt),
            failed_at=datetime.now(UTC),
        )
        also: tuple[Event, ...] = ()
        if code is ErrorCode.AUTH_FAILED and attempt.target is not None and not attempt.refused_before:
            # The server refused this login just now: mailbox-svc tests the outgoing side again.
            also = (
                MailboxSendLoginRefused(
                    mailbox=attempt.target.ref,
                    error=error,
                    login_id=attempt.target.login_id,
                    idempotency_key=req.idempotency_key,
                    refused_at=datetime.now(UTC),
                ),
            )
        await self._store(attempt, "failed", event, send_outcome_subject(SEND_FAILED, req.mailbox_id), also)
        metrics.FAILED.labels(error_code=code.value).inc()

    async def _net_error(self, attempt: _Attempt, exc: NetError) -> None:
        reply = exc.reply if isinstance(exc, SmtpRefused) else None
        refused = refusals(exc.refused) if isinstance(exc, SmtpRefused) else []
        if exc.code in (ErrorCode.AUTH_FAILED, ErrorCode.CREDENTIALS_UNREADABLE):
            self.logins.forget(attempt.req.mailbox_id)  # new credentials may be waiting
        transient = CATALOG[exc.code].transient or (reply is not None and 400 <= reply.code < 500)
        if exc.code is ErrorCode.AUTH_FAILED:
            transient = False
        attempts = self._attempts(attempt)
        if transient and attempts < self.settings.sender_max_attempts:
            error = StoredError(
                code=exc.code.value, detail=exc.detail[:300], reply=str(reply) if reply else None
            )
            await self.stores.sends.retry_later(
                attempt.doc, now() + self._backoff(attempt), error, count=not attempt.data_started
            )
            metrics.RETRIES.labels(error_code=exc.code.value).inc()
            return
        partial = attempt.doc.partial
        if (
            partial is not None and partial.accepted
        ):  # some recipients have it: sent, the deferred ones refused
            last = refused or list(partial.deferred)
            await self._sent(
                attempt, partial.accepted, [*partial.refused, *last], partial.reply, partial.size
            )
            return
        await self._failed(attempt, exc.code, exc.detail or exc.code.value, reply, refused)
        if exc.code is ErrorCode.AUTH_FAILED and attempt.target is not None and not attempt.refused_before:
            # After the report is stored: a crash in between reports it again, never not at all.
            await self.stores.read.mark_login_failed(attempt.req.mailbox_id, attempt.target.login_id)

    def _backoff(self, attempt: _Attempt) -> timedelta:
        """Doubling per attempt up to the longest delay, with jitter; stored as the next due time."""
        attempts = self._attempts(attempt)
        delay = min(self.settings.sender_backoff_max_s, self.settings.sender_backoff_s * 2 ** (attempts - 1))
        return timedelta(seconds=delay * random.uniform(0.9, 1.1))

    async def _uncertain(self, attempt: _Attempt, reason: str) -> None:
        doc, req = attempt.doc, attempt.req
        event = EmailSendUncertain(
            mailbox=attempt.target.ref if attempt.target else _stored_ref(doc),
            idempotency_key=req.idempotency_key,
            message_id=doc.message_id,
            reason=reason[:300],
            data_started_at=doc.data_started_at or datetime.now(UTC),
            detected_at=datetime.now(UTC),
        )
        await self._store(attempt, "uncertain", event, send_outcome_subject(SEND_UNCERTAIN, req.mailbox_id))
        metrics.UNCERTAIN.inc()

    # --- crash recovery ------------------------------------------------------------------------
    async def recover(self) -> int:
        """Report every message left in 'sending' past its lease as uncertain; returns how many."""
        count = 0
        for doc in await self.stores.sends.stale_sending():
            req = doc.request
            event = EmailSendUncertain(
                mailbox=_stored_ref(doc),
                idempotency_key=req.idempotency_key,
                message_id=doc.message_id,
                reason="the sender stopped after handing the message over, before storing the reply",
                data_started_at=doc.data_started_at or doc.updated_at,
                detected_at=datetime.now(UTC),
            )
            envelope = self.out.envelop(
                event, doc.correlation_id, self._ids(doc, "uncertain"), doc.requested_by
            )
            subject = send_outcome_subject(SEND_UNCERTAIN, req.mailbox_id)
            if await self.stores.sends.mark_uncertain(doc, event, envelope, subject):
                count += 1
                metrics.UNCERTAIN.inc()
        if count:
            self.out.wake_relay()
        return count

    async def _recover_pass(self) -> bool:
        await self.recover()
        metrics.QUEUE_DEPTH.set(await self.stores.sends.queue_depth())
        return False


def _stored_ref(doc: SendDoc) -> MailboxRef:
    if doc.mailbox_ref is None:
        raise NetError(ErrorCode.INTERNAL_ERROR, "no mailbox reference stored")
    return doc.mailbox_ref


__all__ = ["RateLimiter", "Sender"]
