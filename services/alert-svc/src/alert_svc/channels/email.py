"""Email digests: at most one mail per recipient per interval, listing every new alert.

Items are leased to a batch before the send and marked sent after it, so a crash mid-batch
re-sends that batch once its lease expires (the Message-ID stays the batch's, for dedupe), and
an SMTP outage only postpones the queue.

The connection passes the one egress policy like every outbound one: the relay's name is resolved
once, every address checked (private ranges only where ``MW_ALERT_SMTP_ALLOW_NETWORKS`` allows
them), and aiosmtplib is handed a socket connected to a checked address (TLS still verifies the
relay's name).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from alert_svc.channels.worker import PollingWorker
from alert_svc.config import Settings
from alert_svc.store.recipients import EmailItem, EmailQueue
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.policy import EgressPolicy, parse_networks
from mailwarden_mailnet.resolve import Resolver, SystemResolver
from mailwarden_mailnet.wire import connect_first
from mailwarden_runtime.egress.admit import checked_addresses

ALLOW_SETTING = "MW_ALERT_SMTP_ALLOW_NETWORKS"

log = logging.getLogger(__name__)


def compose(items: list[EmailItem], batch_id: str, sender: str) -> EmailMessage:
    first = items[0]
    urgent = [i for i in items if i.urgent]
    if urgent:
        subject = f"[mailwarden] {urgent[0].title}"
    elif len(items) == 1:
        subject = f"[mailwarden] {first.level.capitalize()}: {first.title}"
    else:
        subject = f"[mailwarden] {len(items)} new alerts"
    lines = [
        f"Hello {first.recipient_name},",
        "",
        f"{len(items)} new alert(s) on your mailwarden wall:",
        "",
    ]
    for item in items:
        lines.append(f"[{item.level.upper()}] {item.title}")
        lines.append(f"  {item.message}")
        if item.remediation:
            lines.append(f"  What to do: {item.remediation}")
        lines.append(f"  Alert {item.alert_id}" + (f", test run {item.test_id}" if item.test_id else ""))
        lines.append("")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = first.address
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{batch_id}@mailwarden>"
    msg["X-Mailwarden-Alerts"] = str(len(items))
    msg.set_content("\n".join(lines))
    return msg


class EmailDigestWorker(PollingWorker):
    name = "alert-email-digests"

    def __init__(self, repo: EmailQueue, settings: Settings, resolver: Resolver | None = None) -> None:
        super().__init__(settings.alert_channel_poll_s)
        self.repo = repo
        self.settings = settings
        self.resolver = resolver or SystemResolver()
        self.policy = EgressPolicy(
            parse_networks(settings.alert_smtp_allow_networks), (settings.alert_smtp_port,), ALLOW_SETTING
        )

    async def run_once(self) -> None:
        if not self.settings.alert_smtp_host:
            return
        now = datetime.now(UTC)
        lease = 2 * self.settings.alert_smtp_timeout_s + 30
        for key in await self.repo.due_email_recipients(now):
            batch_id, items = await self.repo.claim_emails(
                key, now, lease, self.settings.alert_digest_max_items
            )
            if not items:
                continue
            try:
                await self.send(compose(items, batch_id, self.settings.alert_smtp_from))
            except (aiosmtplib.SMTPException, OSError, NetError, TimeoutError) as exc:
                attempts = max(i.attempts for i in items)
                delay = min(self.settings.alert_email_backoff_s * 2**attempts, 3600.0)
                error = exc.code.value if isinstance(exc, NetError) else type(exc).__name__
                await self.repo.emails_failed(batch_id, now + timedelta(seconds=delay), error)
                log.warning(
                    "digest mail failed; will retry",
                    extra={"retry_in_s": delay, "error": error, "detail": getattr(exc, "detail", "")},
                )
            else:
                await self.repo.emails_sent(batch_id, datetime.now(UTC))

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        context: ssl.SSLContext | None = None
        if s.alert_smtp_tls != "none":
            context = ssl.create_default_context(cafile=s.alert_smtp_ca_file or None)
        password = s.alert_smtp_password.get_secret_value() if s.alert_smtp_password else None
        sock = await self.connect()
        try:
            await self._send(message, sock, context, password)
        except BaseException:
            sock.close()  # aiosmtplib closes it once it has it; before that it is ours
            raise

    async def _send(
        self, message: EmailMessage, sock: socket.socket, context: ssl.SSLContext | None, password: str | None
    ) -> None:
        s = self.settings
        await aiosmtplib.send(
            message,
            hostname=s.alert_smtp_host,  # the name TLS verifies; the socket is to a checked address
            sock=sock,
            port=None,
            use_tls=s.alert_smtp_tls == "implicit",
            start_tls=s.alert_smtp_tls == "starttls",
            tls_context=context,
            username=s.alert_smtp_username or None,
            password=password if s.alert_smtp_username else None,
            timeout=s.alert_smtp_timeout_s,
        )

    async def connect(self) -> socket.socket:
        """A socket to a checked address of the relay; raises NetError when the policy denies it."""
        s = self.settings
        addresses = await checked_addresses(
            self.policy, self.resolver, s.alert_smtp_host, s.alert_smtp_port, s.alert_smtp_timeout_s
        )
        async with asyncio.timeout(s.alert_smtp_timeout_s):
            sock, _address = await connect_first(addresses, s.alert_smtp_port)
        return sock
