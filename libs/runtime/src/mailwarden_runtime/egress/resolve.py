"""Name resolution (A and AAAA) done once per connection, with a deadline and coded failures."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Protocol

from contracts.errors import ErrorCode


class ResolveError(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The OS resolver through ``getaddrinfo`` (honours /etc/hosts, like the mail clients would)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise ResolveError(ErrorCode.DNS_NXDOMAIN, "name not found") from None
            if exc.errno == socket.EAI_AGAIN:
                raise ResolveError(ErrorCode.DNS_FAILURE, "temporary resolver failure") from None
            raise ResolveError(ErrorCode.DNS_FAILURE, f"resolver error {exc.errno}") from None
        seen: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            addr = str(sockaddr[0])
            if addr not in seen:
                seen.append(addr)
        if not seen:
            raise ResolveError(ErrorCode.DNS_NXDOMAIN, "no addresses")
        return seen


class StaticResolver:
    """Fixed answers (tests, and a stand-in for split-horizon names); unknown names are NXDOMAIN.

    IP literals resolve to themselves.
    """

    def __init__(self, table: Mapping[str, list[str]], delay_s: float = 0.0) -> None:
        self.table = {k.lower(): list(v) for k, v in table.items()}
        self.delay_s = delay_s

    async def resolve(self, host: str, port: int) -> list[str]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        answer = self.table.get(host.lower())
        if not answer:
            raise ResolveError(ErrorCode.DNS_NXDOMAIN, "name not found")
        return list(answer)


async def resolve_with_deadline(resolver: Resolver, host: str, port: int, timeout_s: float) -> list[str]:
    try:
        async with asyncio.timeout(timeout_s):
            return await resolver.resolve(host, port)
    except TimeoutError:
        raise ResolveError(ErrorCode.DNS_TIMEOUT, f"no answer within {timeout_s:g}s") from None
