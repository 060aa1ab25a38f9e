"""POP3 probe: greeting, CAPA, STLS, AUTH PLAIN or USER/PASS, STAT, QUIT.

The protocol itself (replies, RFC 2449/3206 classification) is
:class:`mailwarden_mailnet.pop3.Pop3Client`; this module times the steps and records their facts.
"""

from __future__ import annotations

from contracts.errors import ErrorCode, WarningCode
from contracts.models import TlsMode
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.pop3 import Capabilities, Pop3Client
from mailwarden_mailnet.wire import Wire
from tester_svc.probes.base import MAX_CAPS, Session


async def _capa(session: Session, client: Pop3Client, name: str) -> Capabilities:
    async with session.step(name) as facts:
        caps = await client.capabilities()
        facts["capa_supported"] = caps.supported
        facts["capabilities"] = caps.lines[:MAX_CAPS]
        facts["auth_mechanisms"] = caps.mechanisms[:20]
        facts["starttls"] = "STLS" in caps.lines
        facts["user_login"] = "USER" in caps.lines
    return caps


async def _authenticate(session: Session, client: Pop3Client, caps: Capabilities) -> None:
    async with session.step("auth") as facts:
        try:
            facts["mechanism"] = await client.authenticate(session.login, caps)
        except NetError as exc:
            facts["response_code"] = exc.response_code
            raise


async def pop3_dialogue(session: Session, wire: Wire) -> None:
    client = Pop3Client(wire)
    async with session.step("greeting", ErrorCode.GREETING_TIMEOUT) as facts:
        facts["greeting"] = trimmed(await client.greeting(), 120)
    caps = await _capa(session, client, "capabilities")
    if session.tls_mode is TlsMode.STARTTLS:
        async with session.step("starttls") as facts:
            if "STLS" in caps.names and ("USER" in caps.names or caps.mechanisms):
                session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
            await client.stls(caps)
            await session.upgrade(wire, facts)
        caps = await _capa(session, client, "capabilities_tls")
    elif session.tls_mode is TlsMode.NONE:
        session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
    await _authenticate(session, client, caps)
    async with session.step("inbox") as facts:
        try:
            facts["message_count"], facts["size_octets"] = await client.stat()
        except NetError as exc:
            facts["response_code"] = exc.response_code
            raise
    async with session.step("logout") as facts:
        facts["status"] = "OK" if await client.quit() else "ERR"
