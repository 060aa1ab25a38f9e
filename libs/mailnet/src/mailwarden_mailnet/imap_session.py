"""A logged-in IMAP session for one short job (sender-svc's copy of a sent mail): the connection
through the one egress policy (:func:`~mailwarden_mailnet.dial.dial`), then greeting, STARTTLS
where configured, login. Every step has its own deadline; any failure is a classified
:class:`NetError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

from contracts.errors import ErrorCode
from contracts.models import TlsMode
from mailwarden_mailnet.dial import MailTarget, Timeouts, classified, dial
from mailwarden_mailnet.imap import ImapClient
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.policy import EgressPolicy
from mailwarden_mailnet.resolve import Resolver
from mailwarden_mailnet.tls import handshake_errors
from mailwarden_mailnet.wire import Limits

ImapTarget = MailTarget
"""The profile's incoming endpoint and its TLS and auth rules."""


@contextlib.asynccontextmanager
async def imap_session(
    target: ImapTarget,
    login: Login,
    *,
    policy: EgressPolicy,
    resolver: Resolver,
    tls: Callable[[bool], ssl.SSLContext],
    timeouts: Timeouts,
    limits: Limits | None = None,
) -> AsyncIterator[ImapClient]:
    """A logged-in client; LOGOUT (bounded) and the connection dropped when the block ends."""
    ep = target.endpoint
    wire, ctx = await dial(
        target, policy=policy, resolver=resolver, tls=tls, timeouts=timeouts, limits=limits
    )
    client = ImapClient(wire)
    try:
        with classified(ErrorCode.GREETING_TIMEOUT):
            async with asyncio.timeout(timeouts.step_s):
                _, preauth = await client.greeting()
        with classified(ErrorCode.STEP_TIMEOUT):
            async with asyncio.timeout(timeouts.step_s):
                caps = await client.capabilities()
                if ep.tls is TlsMode.STARTTLS:
                    await client.starttls(caps)
                    with handshake_errors():
                        await wire.start_tls(ctx, ep.host)
                    caps = await client.capabilities()
                if not preauth:
                    reply = await client.authenticate(login, caps)
                    if not reply.ok:
                        raise reply.error()
        yield client
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await client.command(b"LOGOUT", logout=True)
    finally:
        wire.abort()
