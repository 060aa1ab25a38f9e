"""EmailRejected → the message moves to the Undeliverable folder, when the profile says so
(and no system tracked it: :mod:`sync_svc.feedback`).

"Move failed email to Undeliverable folder" (the profile's ``move_failed_to_undeliverable``): when
the consuming system answers EmailRejected for a message sync-svc published from an IMAP INBOX,
the message is moved there: ``UID MOVE`` where the server offers MOVE (RFC 6851), else
``UID COPY`` + ``\\Deleted`` + ``UID EXPUNGE`` (UIDPLUS, only that UID). The folder is created
when the server answers ``[TRYCREATE]``. Nothing happens for POP3, for a profile without the
option, or when UIDVALIDITY changed since (the UID no longer names the message).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from contracts.errors import ErrorCode
from contracts.models import IncomingProtocol
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.imap import ImapClient, quote
from sync_svc.connect import imap_session, step
from sync_svc.documents import LedgerEntry
from sync_svc.session import Services
from sync_svc.targets import SyncTarget

log = logging.getLogger(__name__)

FOLDER = "Undeliverable"


class Undeliverable:
    def __init__(self, services: Services, targets: Callable[[], dict[str, SyncTarget]]) -> None:
        self.s = services
        self.targets = targets

    async def __call__(self, mailbox_id: str, entry: LedgerEntry) -> None:
        """Move a rejected message, if its profile says so and it came from this IMAP INBOX."""
        target = self.targets().get(mailbox_id)
        if target is None or not target.move_rejected or target.protocol is not IncomingProtocol.IMAP:
            return
        if not entry.uid or not entry.uv:
            return  # not a message published from an IMAP INBOX
        await self.move(target, entry.uv, entry.uid)

    async def move(self, target: SyncTarget, uidvalidity: int, uid: int) -> bool:
        """Move one message out of INBOX; False when the UID no longer names it (UIDVALIDITY changed)."""
        login = await self.s.logins.login(target.mailbox_id, target.endpoint.host, target.endpoint.port)
        async with self.s.hosts.slot(target.endpoint.host, target.max_connections):
            client, caps = await imap_session(self.s.env, target, login)
            try:
                async with step(self.s.env.step_timeout_s * 2):
                    selected = await client.select(b"INBOX")
                    if selected.uidvalidity != uidvalidity:
                        return False
                    via = await self._move(client, caps, b"%d" % uid)
                with contextlib.suppress(NetError, OSError, TimeoutError):
                    async with step(self.s.env.step_timeout_s):
                        await client.command(b"LOGOUT", logout=True)
            finally:
                client.wire.abort()
        log.info(
            "moved a rejected message",
            extra={"mailbox_id": target.mailbox_id, "folder": FOLDER, "via": via},
        )
        return True

    async def _move(self, client: ImapClient, caps: list[str], uid: bytes) -> str:
        """Returns how: ``MOVE``, or ``COPY`` (+ ``\\Deleted``, + ``UID EXPUNGE`` with UIDPLUS)."""
        folder = quote(FOLDER)
        verb = b"UID MOVE " if "MOVE" in caps else b"UID COPY "
        status, rest, _ = await client.command(verb + uid + b" " + folder)
        if status == "NO" and rest.upper().startswith(b"[TRYCREATE]"):
            await client.command(b"CREATE " + folder)
            status, rest, _ = await client.command(verb + uid + b" " + folder)
        if status != "OK":
            raise NetError(
                ErrorCode.SERVER_TEMPORARY_ERROR, f"{verb.decode().strip()} {status} {trimmed(rest)}"
            )
        if "MOVE" in caps:
            return "MOVE"
        status, rest, _ = await client.command(b"UID STORE " + uid + b" +FLAGS.SILENT (\\Deleted)")
        if status != "OK":
            raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"STORE {status} {trimmed(rest)}")
        if "UIDPLUS" not in caps:  # never a plain EXPUNGE: it would remove what the user flagged too
            return "COPY"
        status, rest, _ = await client.command(b"UID EXPUNGE " + uid)
        if status != "OK":
            raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"UID EXPUNGE {status} {trimmed(rest)}")
        return "COPY"
