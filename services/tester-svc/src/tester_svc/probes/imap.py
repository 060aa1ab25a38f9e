"""IMAP4rev1 probe: greeting, CAPABILITY, STARTTLS, AUTHENTICATE PLAIN or LOGIN, EXAMINE INBOX, LOGOUT.

The protocol itself (commands, literals within the byte budget, RFC 5530 classification) is
:class:`mailwarden_mailnet.imap.ImapClient`; this module times the steps and records their facts.
"""

from __future__ import annotations

import asyncio

from contracts.errors import ErrorCode, WarningCode
from contracts.models import TlsMode
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.imap import ImapClient, parse_capabilities
from mailwarden_mailnet.wire import Wire
from tester_svc.probes.base import MAX_CAPS, Session
from tester_svc.trace import Facts


def _cap_facts(caps: list[str], facts: Facts) -> None:
    facts["capabilities"] = caps[:MAX_CAPS]
    facts["auth_mechanisms"] = [c[5:] for c in caps if c.startswith("AUTH=")][:20]
    facts["starttls"] = "STARTTLS" in caps
    facts["idle"] = "IDLE" in caps
    facts["login_disabled"] = "LOGINDISABLED" in caps


async def _capabilities(session: Session, client: ImapClient, name: str) -> list[str]:
    async with session.step(name) as facts:
        caps = await client.capabilities()
        _cap_facts(caps, facts)
    return caps


async def _authenticate(session: Session, client: ImapClient, caps: list[str]) -> None:
    async with session.step("auth") as facts:
        reply = await client.authenticate(session.login, caps)
        facts["mechanism"] = reply.mechanism
        if not reply.ok:
            error = reply.error()
            facts["response_code"] = error.response_code
            raise error


async def _examine(session: Session, client: ImapClient) -> None:
    """EXAMINE (read-only) normally; SELECT only when a send-mode test must delete its message."""
    async with session.step("inbox") as facts:
        try:
            selected = await client.select(read_only=not session.target.find_marker)
        except NetError as exc:
            facts["response_code"] = exc.response_code
            raise
        facts["message_count"] = selected.exists
        if selected.uidvalidity is not None:
            facts["uidvalidity"] = selected.uidvalidity
        facts["read_only"] = selected.read_only


async def _find_and_delete(session: Session, client: ImapClient) -> None:
    """Look for the message the SMTP side sent (polling while it is delivered), then delete it.

    Only that message's UIDs are expunged (UID EXPUNGE, RFC 4315); without UIDPLUS it is only
    flagged \\Deleted, so other messages the user flagged are never expunged by us.
    """
    marker = session.target.marker.encode()
    async with session.step("find_message") as facts:
        _, _, untagged = await client.command(b"CAPABILITY")  # logged-in capabilities differ
        caps = parse_capabilities(untagged)
        uids: list[bytes] = []
        polls = 0
        loop = asyncio.get_running_loop()
        give_up = loop.time() + session.env.step_timeout_s * 0.8
        while True:
            polls += 1
            await client.command(b"NOOP")
            status, rest, untagged = await client.command(
                b'UID SEARCH HEADER X-Mailwarden-Test "' + marker + b'"'
            )
            if status != "OK":
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"SEARCH {status}: {trimmed(rest)}")
            uids = [
                u for ln in untagged if ln[:9].upper() == b"* SEARCH " for u in ln[9:].split() if u.isdigit()
            ]
            if uids or loop.time() + 0.25 >= give_up:
                break
            await asyncio.sleep(0.25)
        facts["found"] = bool(uids)
        facts["polls"] = polls
        if not uids:
            return
        uid_set = b",".join(uids[:100])
        status, rest, _ = await client.command(b"UID STORE " + uid_set + b" +FLAGS.SILENT (\\Deleted)")
        if status != "OK":
            raise NetError(ErrorCode.INBOX_UNAVAILABLE, f"STORE {status}: {trimmed(rest)}")
        expunged = False
        if "UIDPLUS" in caps:
            status, rest, _ = await client.command(b"UID EXPUNGE " + uid_set)
            expunged = status == "OK"
        facts["deleted"] = expunged


async def imap_dialogue(session: Session, wire: Wire) -> None:
    client = ImapClient(wire)
    async with session.step("greeting", ErrorCode.GREETING_TIMEOUT) as facts:
        line, preauth = await client.greeting()
        facts["greeting"] = trimmed(line, 120)
        facts["preauth"] = preauth
    caps = await _capabilities(session, client, "capabilities")
    if session.tls_mode is TlsMode.STARTTLS:
        async with session.step("starttls") as facts:
            if "STARTTLS" in caps and "LOGINDISABLED" not in caps:
                session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
            await client.starttls(caps)
            await session.upgrade(wire, facts)
        caps = await _capabilities(session, client, "capabilities_tls")
    elif session.tls_mode is TlsMode.NONE and "LOGINDISABLED" not in caps:
        session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
    if not preauth:
        await _authenticate(session, client, caps)
    await _examine(session, client)
    if session.target.find_marker:
        await _find_and_delete(session, client)
    async with session.step("logout") as facts:
        status, _, _ = await client.command(b"LOGOUT", logout=True)
        facts["status"] = status
