"""What every probe shares: the environment, the target, and resolve → policy → TCP → TLS.

The connect flow checks the port and every resolved address before any socket exists, then
connects to the checked address (no second lookup) and verifies the certificate against the
host *name*. The trace shows the resolved addresses only once the policy allowed them: a denied
server's internal addresses are never told to whoever reads the trace. The protocol dialogue runs on the resulting :class:`~mailwarden_mailnet.wire.Wire`.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal

from contracts.errors import ErrorCode
from contracts.models import Endpoint, TlsMode
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.policy import EgressPolicy, Network
from mailwarden_mailnet.resolve import ResolveError, Resolver, resolve_with_deadline
from mailwarden_mailnet.tls import TlsContexts, handshake_errors
from mailwarden_mailnet.wire import Limits, Wire, connect_first
from tester_svc.limits import ConnectionLimiter, LoginBreaker
from tester_svc.tls import record_tls
from tester_svc.trace import Facts, Trace

Protocol = Literal["imap", "pop3", "smtp"]
ALLOW_SETTING = "MW_TESTER_ALLOW_NETWORKS"  # named when a private or loopback address is refused
MAX_CAPS = 60


@dataclass(frozen=True)
class ProbeEnv:
    """Process-wide pieces a probe uses (built once by the runner)."""

    resolver: Resolver
    tls: TlsContexts
    allow_networks: Sequence[Network]
    limiter: ConnectionLimiter
    breaker: LoginBreaker
    step_timeout_s: float
    dns_timeout_s: float
    wire_limits: Limits
    ehlo_name: str


@dataclass(frozen=True)
class ProbeTarget:
    protocol: Protocol
    endpoint: Endpoint
    verify_tls: bool
    allow_plaintext_auth: bool
    connect_timeout_s: float
    max_connections: int
    allowed_ports: Sequence[int]
    mailbox_email: str
    smtp_mode: Literal["dry_run", "send"] = "dry_run"
    marker: str = ""  # X-Mailwarden-Test header value of the message a send-mode test sends
    find_marker: bool = False  # IMAP: find the sent message in INBOX and delete it


class Session:
    """One probe run: helpers for steps, STARTTLS and short reply texts."""

    def __init__(self, env: ProbeEnv, target: ProbeTarget, trace: Trace, login: Login) -> None:
        self.env = env
        self.target = target
        self.trace = trace
        self.login = login

    @property
    def host(self) -> str:
        return self.target.endpoint.host

    @property
    def tls_mode(self) -> TlsMode:
        return self.target.endpoint.tls

    def step(
        self, name: str, timeout_code: ErrorCode = ErrorCode.STEP_TIMEOUT
    ) -> AbstractAsyncContextManager[Facts]:
        return self.trace.step(name, self.env.step_timeout_s, timeout_code)

    def ssl_context(self) -> ssl.SSLContext:
        return self.env.tls.for_target(self.target.verify_tls)

    async def upgrade(self, wire: Wire, facts: Facts) -> None:
        """Finish STARTTLS: handshake against the host name, then record the TLS facts."""
        with handshake_errors():
            await wire.start_tls(self.ssl_context(), self.host)
        facts["mode"] = "starttls"
        record_tls(wire.ssl_object(), self.host, self.target.verify_tls, facts, self.trace)


Dialogue = Callable[[Session, Wire], Awaitable[None]]


async def _resolve(session: Session) -> list[str]:
    env, ep = session.env, session.target.endpoint
    async with session.step("resolve", ErrorCode.DNS_TIMEOUT) as facts:
        try:
            addresses = await resolve_with_deadline(env.resolver, ep.host, ep.port, env.dns_timeout_s)
        except ResolveError as exc:
            raise NetError(exc.code, exc.detail) from None
        facts["count"] = len(addresses)  # the addresses only once allowed: no internal-network oracle
    return addresses


async def _policy_port(session: Session) -> None:
    target = session.target
    async with session.step("policy") as facts:
        facts["port"] = target.endpoint.port
        facts["tls_mode"] = target.endpoint.tls.value
        EgressPolicy(session.env.allow_networks, target.allowed_ports).check_port(target.endpoint.port)
        if target.endpoint.tls is TlsMode.NONE and not target.allow_plaintext_auth:
            raise NetError(ErrorCode.PLAINTEXT_NOT_ALLOWED, "the profile uses no TLS")


async def _policy_addresses(session: Session, addresses: list[str]) -> None:
    async with session.step("address_policy") as facts:
        facts["checked"] = len(addresses)
        EgressPolicy(session.env.allow_networks, allow_setting=ALLOW_SETTING).check_addresses(addresses)
        facts["addresses"] = addresses[:16]


async def run_probe(session: Session, dialogue: Dialogue) -> None:
    """Policy (port), resolve, policy (addresses), then connect and run ``dialogue`` within a host slot."""
    await _policy_port(session)
    addresses = await _resolve(session)
    await _policy_addresses(session, addresses)
    target = session.target
    async with session.env.limiter.slot(session.host, target.max_connections) as slot:
        async with session.trace.step("tcp", target.connect_timeout_s, ErrorCode.TCP_TIMEOUT) as facts:
            facts["limits"] = slot.scope
            facts["slot_wait_ms"] = round(slot.waited_s * 1000, 3)
            sock, facts["address"] = await connect_first(addresses, target.endpoint.port)
        wire: Wire | None = None
        try:
            if session.tls_mode is TlsMode.IMPLICIT:
                # No handshake answer in time: most likely a plaintext server waiting for us to speak.
                async with session.step("tls", ErrorCode.GREETING_TIMEOUT) as facts:
                    facts["mode"] = "implicit"
                    with handshake_errors():
                        wire = await Wire.open(
                            sock, session.env.wire_limits, session.ssl_context(), session.host
                        )
                    record_tls(wire.ssl_object(), session.host, target.verify_tls, facts, session.trace)
            else:
                wire = await Wire.open(sock, session.env.wire_limits)
            await dialogue(session, wire)
        finally:
            if wire is not None:
                wire.abort()
            with contextlib.suppress(OSError):
                sock.close()
