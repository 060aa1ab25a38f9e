"""Opening a logged-in IMAP or POP3 session for one mailbox, through the one egress policy.

Port and TLS mode first, then resolve, then every address against the policy, then TCP to the
checked address only (never the name again), TLS verified against the host name, greeting,
STARTTLS where configured, login. Every step has its own deadline and any failure comes out as
a classified :class:`~mailwarden_mailnet.errors.NetError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from contracts.errors import ErrorCode
from contracts.models import TlsMode
from mailwarden_mailnet.classify import classify_exception
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import ImapClient, capability_code
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.policy import EgressPolicy, Network
from mailwarden_mailnet.pop3 import Pop3Client
from mailwarden_mailnet.resolve import ResolveError, Resolver, resolve_with_deadline
from mailwarden_mailnet.tls import TlsContexts, handshake_errors
from mailwarden_mailnet.wire import Limits, Wire, connect_first
from sync_svc.targets import SyncTarget


@dataclass(frozen=True)
class NetEnv:
    """Process-wide pieces every session uses (built once by the app)."""

    resolver: Resolver
    tls: TlsContexts
    allow_networks: Sequence[Network]
    step_timeout_s: float
    dns_timeout_s: float
    limits: Limits


@contextlib.asynccontextmanager
async def step(timeout_s: float, timeout_code: ErrorCode = ErrorCode.STEP_TIMEOUT) -> AsyncIterator[None]:
    """One protocol step under its deadline; whatever it raises becomes a classified NetError."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except NetError:
        raise
    except Exception as exc:
        raise classify_exception(exc, timeout_code) from None


async def open_wire(env: NetEnv, target: SyncTarget) -> Wire:
    endpoint = target.endpoint
    policy = EgressPolicy(env.allow_networks, target.allowed_ports)
    policy.check_port(endpoint.port)
    if endpoint.tls is TlsMode.NONE and not target.allow_plaintext_auth:
        raise NetError(ErrorCode.PLAINTEXT_NOT_ALLOWED, "the profile uses no TLS")
    try:
        addresses = await resolve_with_deadline(env.resolver, endpoint.host, endpoint.port, env.dns_timeout_s)
    except ResolveError as exc:
        raise NetError(exc.code, exc.detail) from None
    policy.check_addresses(addresses)
    async with step(target.connect_timeout_s, ErrorCode.TCP_TIMEOUT):
        sock, _ = await connect_first(addresses, endpoint.port)
    try:
        if endpoint.tls is TlsMode.IMPLICIT:
            async with step(env.step_timeout_s, ErrorCode.GREETING_TIMEOUT):
                with handshake_errors():
                    ctx = env.tls.for_target(target.verify_tls)
                    return await Wire.open(sock, env.limits, ctx, endpoint.host)
        return await Wire.open(sock, env.limits)
    except BaseException:
        sock.close()
        raise


async def _upgrade(env: NetEnv, target: SyncTarget, wire: Wire) -> None:
    with handshake_errors():
        await wire.start_tls(env.tls.for_target(target.verify_tls), target.endpoint.host)


@dataclass(frozen=True)
class ImapOpened:
    """A logged-in IMAP session: its client, its capabilities after login, and the tag of the
    command sent behind the login (None when it was not sent, e.g. PREAUTH). ``caps`` is None when
    the login's answer did not carry them and a command is behind it: ask once it is read."""

    client: ImapClient
    caps: list[str] | None
    then: bytes | None


async def imap_session(
    env: NetEnv, target: SyncTarget, login: Login | Callable[[], Awaitable[Login]]
) -> tuple[ImapClient, list[str]]:
    """A logged-in IMAP client and its capabilities after login (:func:`open_imap`)."""
    opened = await open_imap(env, target, login)
    assert opened.caps is not None  # (nothing sent behind the login)
    return opened.client, opened.caps


async def open_imap(
    env: NetEnv, target: SyncTarget, login: Login | Callable[[], Awaitable[Login]], then: bytes = b""
) -> ImapOpened:
    """A logged-in IMAP session. ``login`` may be a call that gives it: awaited only when the
    server asks for it, so a fetch of it started before can run while TCP and TLS are set up (one
    round trip to mailbox-svc less per pass). ``then`` (``SELECT INBOX``) is sent in the same write
    as the credentials: its answer is read by its tag (``ImapOpened.then``)."""
    wire = await open_wire(env, target)
    client = ImapClient(wire)
    try:
        async with step(env.step_timeout_s, ErrorCode.GREETING_TIMEOUT):
            greeting, preauth = await client.greeting()
        async with step(env.step_timeout_s):
            # Capabilities from the greeting's and the login's response codes where the server
            # sends them (Dovecot does): two round trips less per session. Never trusted from
            # before STARTTLS: asked again once the connection is encrypted.
            caps = capability_code(greeting) or await client.capabilities()
            if target.endpoint.tls is TlsMode.STARTTLS:
                await client.starttls(caps)
                await _upgrade(env, target, wire)
                caps = await client.capabilities()
            after: list[str] = []
            sent: bytes | None = None
            if not preauth:
                opened = login if isinstance(login, Login) else await login()
                reply = await client.authenticate(opened, caps, then)
                if not reply.ok:
                    raise reply.error()
                after, sent = capability_code(reply.text), reply.then
            # logged-in capabilities differ (IDLE, UIDPLUS, MOVE); asked now unless a command
            # is behind the login (its answer would come first)
            known = after or (None if sent else await client.capabilities())
    except BaseException:
        wire.abort()
        raise
    return ImapOpened(client, known, sent)


async def pop3_session(env: NetEnv, target: SyncTarget, login: Login) -> Pop3Client:
    """A logged-in POP3 client."""
    wire = await open_wire(env, target)
    client = Pop3Client(wire)
    try:
        async with step(env.step_timeout_s, ErrorCode.GREETING_TIMEOUT):
            await client.greeting()
        async with step(env.step_timeout_s):
            caps = await client.capabilities()
            if target.endpoint.tls is TlsMode.STARTTLS:
                await client.stls(caps)
                await _upgrade(env, target, wire)
                caps = await client.capabilities()
            await client.authenticate(login, caps)
    except BaseException:
        wire.abort()
        raise
    return client
