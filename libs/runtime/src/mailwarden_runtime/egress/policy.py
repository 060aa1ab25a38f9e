"""Egress policy: which ports and addresses mailwarden may connect to (SSRF guard).

Every resolved address is checked, and IPv4 hidden in IPv6 (mapped, compatible, NAT64, 6to4,
Teredo) is unwrapped and checked too. The caller then connects to exactly the checked address,
never to the name again, so DNS rebinding cannot swap the target after the check. Every outbound
connection (tester probes, mailbox sync, sending, webhooks, the identity provider's JWKS) goes
through :class:`EgressPolicy`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from contracts.errors import ErrorCode
from mailwarden_runtime.egress.errors import NetError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Explicit deny table on top of ipaddress' flags (is_global alone has had holes, CVE-2024-4032).
_DENY: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
        "ff00::/8",
        "100::/64",
        "2001:db8::/32",
    )
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def embedded_ipv4(addr: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (and would reach through a translator)."""
    if isinstance(addr, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    packed = int(addr)
    if packed >> 32 == 0 and packed > 1:  # deprecated IPv4-compatible ::a.b.c.d
        found.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    if any(addr in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    if addr in _SIX_TO_FOUR and addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    return found


def _denied(addr: IPAddress) -> bool:
    return (
        not addr.is_global
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or any(addr.version == net.version and addr in net for net in _DENY)
    )


def _allowed_by_operator(addr: IPAddress, allow: Sequence[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in allow)


def address_allowed(addr: IPAddress, allow: Sequence[Network] = ()) -> bool:
    """True when ``addr`` and every IPv4 it embeds are public, or inside an operator-allowed range."""
    if _allowed_by_operator(addr, allow):
        return True
    if isinstance(addr, ipaddress.IPv6Address) and any(addr in net for net in _NAT64):
        # DNS64 networks reach every IPv4 host through NAT64: judge the IPv4 address it carries.
        # Operator ranges apply to direct addresses only: hidden IPv4 is always judged strictly.
        return address_allowed(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    if _denied(addr):
        return False
    return all(address_allowed(inner) for inner in embedded_ipv4(addr))


def parse_address(text: str) -> IPAddress | None:
    """An address from getaddrinfo (may carry an IPv6 zone); None when unparsable (fail closed)."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def operator_allowable(text: str) -> bool:
    """Whether ``text`` is a private or loopback address, the kind an operator's allow-list may allow.

    Not hidden IPv4 in IPv6: such addresses are judged strictly whatever the operator allows.
    """
    addr = parse_address(text)
    if addr is None or (isinstance(addr, ipaddress.IPv6Address) and embedded_ipv4(addr)):
        return False
    return bool((addr.is_private or addr.is_loopback) and not addr.is_link_local and not addr.is_unspecified)


def check_addresses(addresses: Iterable[str], allow: Sequence[Network]) -> list[str]:
    """The addresses that break the policy (unparsable ones included). Empty means all are allowed."""
    bad: list[str] = []
    for text in addresses:
        addr = parse_address(text)
        if addr is None or not address_allowed(addr, allow):
            bad.append(text)
    return bad


def parse_networks(text: str) -> list[Network]:
    """``"127.0.0.0/8, 10.1.0.0/16"`` → networks; raises ValueError naming the bad entry."""
    nets: list[Network] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not a network: {part!r}") from None
    return nets


def _valid_networks(text: str) -> str:
    parse_networks(text)
    return text


NetworksText = Annotated[str, AfterValidator(_valid_networks)]
"""A setting holding an operator's allow-list (``"10.0.5.0/24, 127.0.0.1/32"``), checked when read."""


@dataclass(frozen=True)
class EgressPolicy:
    """The ports and the operator-allowed private ranges of one kind of outbound connection."""

    allow_networks: Sequence[Network] = ()
    allowed_ports: Sequence[int] = ()
    allow_setting: str = ""
    """The operator setting that holds ``allow_networks`` (e.g. MW_TESTER_ALLOW_NETWORKS), named in refusals."""

    def check_port(self, port: int) -> None:
        """Raise ``port_not_allowed`` unless ``port`` is in the allow-list (fail closed: empty allows none)."""
        if port not in self.allowed_ports:
            raise NetError(
                ErrorCode.PORT_NOT_ALLOWED,
                f"port {port} is not in the organisation's allowed ports (email settings port_preset /"
                " allowed_ports)",
            )

    def check_addresses(self, addresses: Iterable[str]) -> None:
        """Raise ``address_not_allowed`` when any resolved address breaks the policy.

        Coarse on purpose: which address was denied is not told (no internal-network oracle). Only
        the kind an operator may allow (private, loopback) is named, with the setting that allows it.
        """
        denied = check_addresses(addresses, self.allow_networks)
        if not denied:
            return
        if self.allow_setting and all(operator_allowable(a) for a in denied):
            raise NetError(
                ErrorCode.ADDRESS_NOT_ALLOWED,
                "the server resolves to a private or loopback address; an operator may allow its range"
                f" in {self.allow_setting}",
            )
        raise NetError(ErrorCode.ADDRESS_NOT_ALLOWED, "the server resolves to a non-public address")
