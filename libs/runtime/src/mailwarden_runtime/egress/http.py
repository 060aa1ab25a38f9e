"""Outbound HTTP (webhooks, the identity provider's JWKS) through the one egress policy: the mail
clients' guarantees for URLs.

A URL is parsed here, not by the resolver: IPv4 written in decimal, octal, hex or short form
(``2130706433``, ``0177.0.0.1``, ``0x7f.1``) is read the way browsers and ``inet_aton`` read it, so
it is judged as the address it really is. The name is resolved once, every address checked by
:class:`~mailwarden_runtime.egress.policy.EgressPolicy`, and the request goes to a checked address
(httpcore with a network backend pinned to it) while Host and TLS SNI keep the URL's name:
DNS rebinding cannot swap the target after the check. Redirects are never followed. One deadline
covers the whole exchange, the response body read is capped, and a :class:`HostLimiter` bounds
requests per host and overall. Every failure to get an answer is one :class:`NetError`; callers
show the same words for all of them, so denied and unreachable targets look alike (no port scanner).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpcore

from contracts.errors import ErrorCode
from mailwarden_runtime.egress.admit import checked_addresses
from mailwarden_runtime.egress.errors import NetError
from mailwarden_runtime.egress.policy import EgressPolicy
from mailwarden_runtime.egress.resolve import Resolver

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_LOOKS_NUMERIC = re.compile(r"^(0[xX][0-9a-zA-Z]*|[0-9][0-9a-zA-Z]*)$")


class UrlRefused(ValueError):
    """A URL that is not an absolute http(s) URL we may call (the message names what is wrong)."""


def _ipv4_part(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    return int(part, 10)


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host written as numbers means (WHATWG URL rules); None for a name.

    Raises :class:`UrlRefused` for a host that ends in a number yet is no valid address
    (``1.2.3.999``, ``08.1.1.1``): browsers refuse those too, and a resolver might not.
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    if not parts or not _LOOKS_NUMERIC.match(parts[-1]):
        return None
    if len(parts) > 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        raise UrlRefused("the host ends in a number but is not an IPv4 address")
    try:
        numbers = [_ipv4_part(p) for p in parts]
    except ValueError:
        raise UrlRefused("the host ends in a number but is not an IPv4 address") from None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise UrlRefused("the host ends in a number but is not an IPv4 address")
    value = last
    for i, n in enumerate(leading):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@dataclass(frozen=True)
class HttpTarget:
    """An absolute http(s) URL taken apart; ``host`` is canonical (an IP literal is in its usual form)."""

    scheme: Literal["http", "https"]
    host: str
    port: int
    target: str
    """Path and query, as sent on the request line."""
    literal: bool
    """True when ``host`` is an IP address (no name to resolve)."""

    def url(self) -> httpcore.URL:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return httpcore.URL(scheme=self.scheme, host=host, port=self.port, target=self.target)


def parse_target(url: str) -> HttpTarget:
    """``url`` → :class:`HttpTarget`; raises :class:`UrlRefused` for anything but plain http(s)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UrlRefused("not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("no user or password in the URL (the signature authenticates us)")
    raw_host = (parts.hostname or "").rstrip(".")
    if not raw_host:
        raise UrlRefused("the URL has no host")
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        literal = ipaddress.ip_address(raw_host.split("%", 1)[0])
    except ValueError:
        literal = legacy_ipv4(raw_host)
    try:
        host = str(literal) if literal is not None else raw_host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlRefused("the host is not a valid name") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpTarget(
        scheme="https" if scheme == "https" else "http",
        host=host,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        target=target,
        literal=literal is not None,
    )


class HostLimiter:
    """At most ``per_host`` requests to one host and ``overall`` in all, waiting in line for a slot."""

    def __init__(self, per_host: int, overall: int) -> None:
        self.per_host = per_host
        self._overall = asyncio.Semaphore(overall)
        self._hosts: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        sem, users = self._hosts.get(host, (asyncio.Semaphore(self.per_host), 0))
        self._hosts[host] = (sem, users + 1)
        try:
            async with sem, self._overall:  # the host's slot first: one busy host holds no global slots
                yield
        finally:
            sem, users = self._hosts[host]
            if users == 1:
                del self._hosts[host]
            else:
                self._hosts[host] = (sem, users - 1)

    def busy_hosts(self) -> int:
        return len(self._hosts)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, told to connect to the checked address whatever host it is given."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface; our deadline is outside)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(self.address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface; our deadline is outside)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise NetError(ErrorCode.ADDRESS_NOT_ALLOWED, "no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    """At most the cap's bytes of the response body."""
    truncated: bool
    address: str
    """The checked address the request went to."""


_NO_ANSWER = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException, ssl.SSLError, OSError)
_NO_CONNECTION = (httpcore.ConnectError, httpcore.ConnectTimeout)


class HttpEgress:
    """Outbound HTTP requests that only reach what the policy allows, within one deadline each."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver,
        limiter: HostLimiter,
        *,
        deadline_s: float,
        dns_timeout_s: float = 5.0,
        max_response_bytes: int = 65536,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.limiter = limiter
        self.deadline_s = deadline_s
        self.dns_timeout_s = dns_timeout_s
        self.max_response_bytes = max_response_bytes
        self.ssl_context = ssl_context or ssl.create_default_context()

    async def admit(self, url: str) -> tuple[HttpTarget, list[str]]:
        """The target and its checked addresses; raises :class:`UrlRefused` or :class:`NetError`."""
        target = parse_target(url)
        if target.literal:
            self.policy.check_port(target.port)
            self.policy.check_addresses([target.host])
            return target, [target.host]
        addresses = await checked_addresses(
            self.policy, self.resolver, target.host, target.port, self.dns_timeout_s
        )
        return target, addresses

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> HttpReply:
        """POST ``body``; any answer is returned (no redirect followed), no answer raises NetError."""
        return await self.request("POST", url, body, headers)

    async def get(self, url: str, headers: dict[str, str]) -> HttpReply:
        """GET ``url``; any answer is returned (no redirect followed), no answer raises NetError."""
        return await self.request("GET", url, b"", headers)

    async def request(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> HttpReply:
        """One request to a checked address of ``url``'s host, within the deadline, or NetError."""
        try:
            async with asyncio.timeout(self.deadline_s):
                target, addresses = await self.admit(url)
                async with self.limiter.slot(target.host):
                    return await self._first_answer(method, target, addresses, body, headers)
        except UrlRefused as exc:
            raise NetError(ErrorCode.ADDRESS_NOT_ALLOWED, str(exc)) from None
        except TimeoutError:
            raise NetError(ErrorCode.STEP_TIMEOUT, f"no answer within {self.deadline_s:g}s") from None

    async def _first_answer(
        self, method: str, target: HttpTarget, addresses: list[str], body: bytes, headers: dict[str, str]
    ) -> HttpReply:
        last = "no address"
        for address in addresses:
            try:
                return await self._send(method, target, address, body, headers)
            except _NO_CONNECTION as exc:
                last = type(exc).__name__
            except _NO_ANSWER as exc:
                raise NetError(ErrorCode.CONNECTION_LOST, type(exc).__name__) from None
        raise NetError(ErrorCode.TCP_UNREACHABLE, last)

    async def _send(
        self, method: str, target: HttpTarget, address: str, body: bytes, headers: dict[str, str]
    ) -> HttpReply:
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self.ssl_context if target.scheme == "https" else None,
            network_backend=_PinnedBackend(address),
            max_connections=1,
            retries=0,
        )
        async with pool:
            sent = [(k.encode(), v.encode()) for k, v in headers.items()]
            sent.append((b"Connection", b"close"))
            async with pool.stream(method, target.url(), headers=sent, content=body) as response:
                received = bytearray()
                truncated = False
                async for chunk in response.aiter_stream():
                    received += chunk
                    if len(received) > self.max_response_bytes:
                        truncated = True
                        break
                return HttpReply(
                    status=response.status,
                    body=bytes(received[: self.max_response_bytes]),
                    truncated=truncated,
                    address=address,
                )
