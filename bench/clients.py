"""One mailbox test, the steps mailwarden's tester takes, with two client stacks.

IMAPS connect (certificate verified against the test CA) + LOGIN + EXAMINE INBOX + LOGOUT, then
SMTP connect + STARTTLS + AUTH + MAIL FROM / RCPT TO the user's own address + RSET + QUIT: no
message is sent. Both halves always run (mailwarden tests both directions of a mailbox); a test
is ok when both are. Clients connect to 127.0.0.1 and check the certificate's IP name
(the test certificate is issued for localhost, 127.0.0.1 and mail.test), so no lookup of
"localhost" can wander to ::1 where no proxy listens.
"""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import time

import aioimaplib
import aiosmtplib

from bench.mailboxes import Mailbox
from bench.models import Endpoint, Outcome

__all__ = ["EHLO_NAME", "check_async", "check_sync", "client_context"]

# A fixed EHLO name, as a tester configures one: without it both smtplib and aiosmtplib call
# socket.getfqdn() (a reverse lookup; aiosmtplib even in a thread) for every connection.
EHLO_NAME = "bench.mailwarden.test"


def client_context(ca_file: str) -> ssl.SSLContext:
    """Verifying context (hostname check on, TLS >= 1.2) trusting only the test CA; built once."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _kind(prefix: str, exc: BaseException) -> str:
    return f"{prefix}_error:{type(exc).__name__}"


# --- the sequential baseline: the standard library, what an admin writes -------------------
def _imap_sync(ep: Endpoint, mb: Mailbox, ctx: ssl.SSLContext, timeout: float) -> str | None:
    try:
        with imaplib.IMAP4_SSL(ep.host, ep.imaps_port, ssl_context=ctx, timeout=timeout) as imap:
            try:
                imap.login(mb.user, mb.password)
            except imaplib.IMAP4.error:
                return "imap_auth"
            typ, _ = imap.select("INBOX", readonly=True)  # EXAMINE
            imap.logout()
            return None if typ == "OK" else "imap_examine"
    except (OSError, imaplib.IMAP4.error, EOFError) as exc:
        return _kind("imap", exc)


def _smtp_sync(ep: Endpoint, mb: Mailbox, ctx: ssl.SSLContext, timeout: float) -> str | None:
    try:
        with smtplib.SMTP(ep.host, ep.smtp_port, local_hostname=EHLO_NAME, timeout=timeout) as smtp:
            smtp.ehlo()
            smtp.starttls(context=ctx)
            smtp.ehlo()
            try:
                smtp.login(mb.user, mb.password)
            except smtplib.SMTPAuthenticationError:
                return "smtp_auth"
            code, _ = smtp.mail(mb.address)
            if code != 250:
                return "smtp_mail"
            code, _ = smtp.rcpt(mb.address)
            if code not in (250, 251):
                return "smtp_rcpt"
            smtp.rset()
            smtp.quit()
            return None
    except (OSError, smtplib.SMTPException) as exc:
        return _kind("smtp", exc)


def check_sync(ep: Endpoint, mb: Mailbox, index: int, ctx: ssl.SSLContext, timeout: float) -> Outcome:
    """One test with imaplib + smtplib (blocking)."""
    started = time.perf_counter()
    errors = [e for e in (_imap_sync(ep, mb, ctx, timeout), _smtp_sync(ep, mb, ctx, timeout)) if e]
    return Outcome(index=index, ok=not errors, latency_s=time.perf_counter() - started, errors=tuple(errors))


# --- the limit: the same steps with asyncio client libraries ----------------------------------
async def _imap_async(ep: Endpoint, mb: Mailbox, ctx: ssl.SSLContext, op_timeout_s: float) -> str | None:
    imap = aioimaplib.IMAP4_SSL(ep.host, ep.imaps_port, ssl_context=ctx, timeout=op_timeout_s)
    try:
        await imap.wait_hello_from_server()
        if (await imap.login(mb.user, mb.password)).result != "OK":
            await imap.logout()
            return "imap_auth"
        examined = await imap.examine("INBOX")
        await imap.logout()
        return None if examined.result == "OK" else "imap_examine"
    except (OSError, aioimaplib.Abort, aioimaplib.CommandTimeout, TimeoutError) as exc:
        return _kind("imap", exc)
    finally:
        if imap.protocol is not None and imap.protocol.transport is not None:
            imap.protocol.transport.close()


async def _smtp_async(ep: Endpoint, mb: Mailbox, ctx: ssl.SSLContext, op_timeout_s: float) -> str | None:
    smtp = aiosmtplib.SMTP(
        hostname=ep.host,
        port=ep.smtp_port,
        local_hostname=EHLO_NAME,
        start_tls=False,
        tls_context=ctx,
        timeout=op_timeout_s,
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        await smtp.starttls()
        await smtp.ehlo()
        try:
            await smtp.login(mb.user, mb.password)
        except aiosmtplib.SMTPAuthenticationError:
            await smtp.quit()
            return "smtp_auth"
        await smtp.mail(mb.address)
        await smtp.rcpt(mb.address)
        await smtp.rset()
        await smtp.quit()
        return None
    except (OSError, aiosmtplib.SMTPException, TimeoutError) as exc:
        return _kind("smtp", exc)
    finally:
        if smtp.is_connected:
            smtp.close()


async def check_async(
    ep: Endpoint, mb: Mailbox, index: int, ctx: ssl.SSLContext, op_timeout_s: float
) -> Outcome:
    """One test with aioimaplib + aiosmtplib (`op_timeout_s` bounds each protocol step)."""
    started = time.perf_counter()
    imap_error = await _imap_async(ep, mb, ctx, op_timeout_s)
    smtp_error = await _smtp_async(ep, mb, ctx, op_timeout_s)
    errors = tuple(e for e in (imap_error, smtp_error) if e)
    return Outcome(index=index, ok=not errors, latency_s=time.perf_counter() - started, errors=errors)
