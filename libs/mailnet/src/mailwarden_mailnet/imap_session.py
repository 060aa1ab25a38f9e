"""A logged-in IMAP session for one short job (sender-svc's copy of a sent mail), through the one
egress policy: port first, then resolve, every address against the policy, TCP to the checked
address only, TLS verified against the host name, greeting, STARTTLS where configured, login.
Every step has its own deadline; any failure is a classified :class:`NetError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

from contracts.errors import ErrorCode
from contracts.models import Endpoint, TlsMode
from mailwarden_mailnet.classify import classify_exception
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import ImapClient
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.policy import EgressPolicy
from mailwarden_mailnet.resolve import ResolveError, Resolver, resolve_with_deadline
from mailwarden_mailnet.smtp import Timeouts
from mailwarden_mailnet.tls import handshake_errors
from mailwarden_mailnet.wire import Limits, Wire, connect_first


@dataclass(frozen=True)
class ImapTarget:
    """The profile's incoming endpoint and its TLS and auth rules."""

    endpoint: Endpoint
    allowed_ports: Sequence[int]
    verify_tls: bool = True
    allow_plaintext_auth: bool = False


@contextlib.contextmanager
def _classified(timeout_code: ErrorCode) -> Iterator[None]:
    try:
        yield
    except NetError:
        raise
    except (Exception, TimeoutError) as exc:
        raise classify_exception(exc, timeout_code) from None


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
    EgressPolicy(policy.allow_networks, target.allowed_ports).check_port(ep.port)
    if ep.tls is TlsMode.NONE and not target.allow_plaintext_auth:
        raise NetError(ErrorCode.PLAINTEXT_NOT_ALLOWED, "the profile uses no TLS")
    try:
        addresses = await resolve_with_deadline(resolver, ep.host, ep.port, timeouts.dns_s)
    except ResolveError as exc:
        raise NetError(exc.code, exc.detail) from None
    policy.check_addresses(addresses)
    with _classified(ErrorCode.TCP_TIMEOUT):
        async with asyncio.timeout(timeouts.connect_s):
            sock, _ = await connect_first(addresses, ep.port)
    ctx = tls(target.verify_tls)
    try:
        with _classified(ErrorCode.GREETING_TIMEOUT), handshake_errors():
            async with asyncio.timeout(timeouts.step_s):
                if ep.tls is TlsMode.IMPLICIT:
                    wire = await Wire.open(sock, limits or Limits(), ctx, ep.host)
                else:
                    wire = await Wire.open(sock, limits or Limits())
    except BaseException:
        sock.close()
        raise
    client = ImapClient(wire)
    try:
        with _classified(ErrorCode.GREETING_TIMEOUT):
            async with asyncio.timeout(timeouts.step_s):
                _, preauth = await client.greeting()
        with _classified(ErrorCode.STEP_TIMEOUT):
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
