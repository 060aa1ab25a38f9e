"""Reaching a mail server through the one egress policy, for SMTP and IMAP alike.

The port against the allowed ports, no TLS only where plaintext logins are allowed, then resolve
(with a deadline), every address against the policy, TCP to a checked address only (never the
name again), and implicit TLS verified against the host name. STARTTLS, the greeting and the
login are the protocol's own (``smtp.open_smtp``, ``imap_session.imap_session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from contracts.errors import ErrorCode
from contracts.models import Endpoint, TlsMode
from mailwarden_mailnet.classify import classify_exception
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.policy import EgressPolicy
from mailwarden_mailnet.resolve import ResolveError, Resolver, resolve_with_deadline
from mailwarden_mailnet.tls import handshake_errors
from mailwarden_mailnet.wire import Limits, Wire, connect_first


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 15.0
    dns_s: float = 5.0
    step_s: float = 30.0
    data_s: float = 120.0
    """Waiting for the reply to the final dot (RFC 5321 suggests up to 10 minutes)."""


@dataclass(frozen=True)
class MailTarget:
    """Where and how to connect: a profile's endpoint and its TLS and auth rules."""

    endpoint: Endpoint
    allowed_ports: Sequence[int]
    verify_tls: bool = True
    allow_plaintext_auth: bool = False


@contextlib.contextmanager
def classified(timeout_code: ErrorCode) -> Iterator[None]:
    """Whatever a step raises becomes a classified NetError (a timeout: ``timeout_code``)."""
    try:
        yield
    except NetError:
        raise
    except (Exception, TimeoutError) as exc:
        raise classify_exception(exc, timeout_code) from None


async def dial(
    target: MailTarget,
    *,
    policy: EgressPolicy,
    resolver: Resolver,
    tls: Callable[[bool], ssl.SSLContext],
    timeouts: Timeouts,
    limits: Limits | None = None,
) -> tuple[Wire, ssl.SSLContext]:
    """A connection to ``target`` (TLS already when implicit) and the TLS context for STARTTLS."""
    ep = target.endpoint
    EgressPolicy(policy.allow_networks, target.allowed_ports).check_port(ep.port)
    if ep.tls is TlsMode.NONE and not target.allow_plaintext_auth:
        raise NetError(ErrorCode.PLAINTEXT_NOT_ALLOWED, "the profile uses no TLS")
    try:
        addresses = await resolve_with_deadline(resolver, ep.host, ep.port, timeouts.dns_s)
    except ResolveError as exc:
        raise NetError(exc.code, exc.detail) from None
    policy.check_addresses(addresses)
    with classified(ErrorCode.TCP_TIMEOUT):
        async with asyncio.timeout(timeouts.connect_s):
            sock, _ = await connect_first(addresses, ep.port)
    ctx = tls(target.verify_tls)
    try:
        with classified(ErrorCode.GREETING_TIMEOUT), handshake_errors():
            async with asyncio.timeout(timeouts.step_s):
                if ep.tls is TlsMode.IMPLICIT:
                    return await Wire.open(sock, limits or Limits(), ctx, ep.host), ctx
                return await Wire.open(sock, limits or Limits()), ctx
    except BaseException:
        sock.close()
        raise
