"""The egress policy, as the mail clients import it: implemented once in :mod:`mailwarden_runtime.egress.policy`."""

from __future__ import annotations

from mailwarden_runtime.egress.policy import (
    EgressPolicy,
    IPAddress,
    Network,
    NetworksText,
    address_allowed,
    check_addresses,
    embedded_ipv4,
    operator_allowable,
    parse_address,
    parse_networks,
)

__all__ = [
    "EgressPolicy",
    "IPAddress",
    "Network",
    "NetworksText",
    "address_allowed",
    "check_addresses",
    "embedded_ipv4",
    "operator_allowable",
    "parse_address",
    "parse_networks",
]
