"""What every probe shares: the environment, the target, and resolve → policy → TCP → TLS.

The connect flow checks the port and every resolved address before any socket exists, then
connects to the checked address (no second lookup) and verifies the certificate against the
host *name*. The protocol dialogue runs on the resulting :class:`~tester_svc.wire.Wire`.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, SecretStr

from contracts.errors import ErrorCode
from contracts.models import Endpoint, TlsMode
from tester_svc.config import Network
from tester_svc.errors import ProbeError
from tester_svc.limits import ConnectionLimiter, LoginBreaker
from tester_svc.policy import check_addresses
from tester_svc.resolve import ResolveError, Resolver, resolve_with_deadline
from tester_svc.tls import TlsContexts, record_tls
from tester_svc.trace import Facts, Trace
from tester_svc.wire import Limits, Wire, connect_socket

Protocol = Literal["imap", "pop3", "smtp"]
MAX_CAPS = 60


class Login(BaseModel):
    """The opened credentials; the password stays a SecretStr until the auth step sends it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    username: str
    password: SecretStr

    def plain_blob(self) -> bytes:
        """SASL PLAIN initial response, base64 (RFC 4616): authzid empty."""
        raw = b"\0" + self.username.encode() + b"\0" + self.password.get_secret_value().encode()
        return base64.b64encode(raw)

    def secret_forms(self) -> tuple[str, ...]:
        """Every form in which the password may come back in a server reply (for redaction)."""
        pw = self.password.get_secret_value()
        return (pw, self.plain_blob().decode(), base64.b64encode(pw.encode()).decode())


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


@contextlib.contextmanager
def handshake_errors() -> Iterator[None]:
    """A connection reset or closed in the middle of a TLS handshake is a failed handshake."""
    try:
        yield
    except (ConnectionError, EOFError) as exc:
        raise ProbeError(
            ErrorCode.TLS_HANDSHAKE_FAILED, f"connection dropped in the handshake ({type(exc).__name__})"
        ) from None


def trimmed(text: bytes, limit: int = 160) -> str:
    return text.decode("utf-8", "replace")[:limit]


async def _resolve(session: Session) -> list[str]:
    env, ep = session.env, session.target.endpoint
    async with session.step("resolve", ErrorCode.DNS_TIMEOUT) as facts:
        try:
            addresses = await resolve_with_deadline(env.resolver, ep.host, ep.port, env.dns_timeout_s)
        except ResolveError as exc:
            raise ProbeError(exc.code, exc.detail) from None
        facts["addresses"] = addresses[:16]
    return addresses


async def _policy_port(session: Session) -> None:
    target = session.target
    async with session.step("policy") as facts:
        facts["port"] = target.endpoint.port
        facts["tls_mode"] = target.endpoint.tls.value
        if target.endpoint.port not in target.allowed_ports:
            raise ProbeError(ErrorCode.PORT_NOT_ALLOWED, f"port {target.endpoint.port} is not allowed")
        if target.endpoint.tls is TlsMode.NONE and not target.allow_plaintext_auth:
            raise ProbeError(ErrorCode.PLAINTEXT_NOT_ALLOWED, "the profile uses no TLS")


async def _policy_addresses(session: Session, addresses: list[str]) -> None:
    async with session.step("address_policy") as facts:
        denied = check_addresses(addresses, session.env.allow_networks)
        facts["checked"] = len(addresses)
        if denied:
            # Coarse on purpose: which address was denied is not told (no internal-network oracle).
            raise ProbeError(ErrorCode.ADDRESS_NOT_ALLOWED, "the server resolves to a non-public address")


async def run_probe(session: Session, dialogue: Dialogue) -> None:
    """Policy (port), resolve, policy (addresses), then connect and run ``dialogue`` within a host slot."""
    await _policy_port(session)
    addresses = await _resolve(session)
    await _policy_addresses(session, addresses)
    target = session.target
    async with session.env.limiter.slot(session.host, target.max_connections) as slot:
        sock = None
        async with session.trace.step("tcp", target.connect_timeout_s, ErrorCode.TCP_TIMEOUT) as facts:
            facts["limits"] = slot.scope
            facts["slot_wait_ms"] = round(slot.waited_s * 1000, 3)
            last: BaseException | None = None
            for address in addresses:
                try:
                    sock = await connect_socket(address, target.endpoint.port)
                    facts["address"] = address
                    break
                except OSError as exc:
                    last = exc
            if sock is None:
                raise last or ProbeError(ErrorCode.TCP_UNREACHABLE, "no address to connect to")
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
