"""The policy's first two steps for a name and port: port allowed, resolved once, every address checked."""

from __future__ import annotations

from mailwarden_runtime.egress.errors import NetError
from mailwarden_runtime.egress.policy import EgressPolicy
from mailwarden_runtime.egress.resolve import ResolveError, Resolver, resolve_with_deadline


async def checked_addresses(
    policy: EgressPolicy, resolver: Resolver, host: str, port: int, dns_timeout_s: float
) -> list[str]:
    """The addresses of ``host`` a connection may go to (all of them allowed), or NetError."""
    policy.check_port(port)
    try:
        addresses = await resolve_with_deadline(resolver, host, port, dns_timeout_s)
    except ResolveError as exc:
        raise NetError(exc.code, exc.detail) from None
    policy.check_addresses(addresses)
    return addresses
