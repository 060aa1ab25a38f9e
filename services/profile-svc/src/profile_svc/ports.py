"""The organisation's outbound port allow-list: presets, and what to suggest instead of a refused port."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from contracts.models import IncomingProtocol, TlsMode

PortPreset = Literal["default", "government_cloud", "custom"]

PRESETS: dict[str, tuple[int, ...]] = {
    "default": (993, 995, 465, 587, 143, 110, 25),
    "government_cloud": (80, 443, 465, 587, 993),
}

Service = Literal["imap", "pop3", "smtp"]


@dataclass(frozen=True)
class Alternative:
    port: int
    tls: TlsMode
    label: str


# Preferred first: implicit TLS (RFC 8314), then STARTTLS, then the legacy plain port.
_ALTERNATIVES: dict[Service, tuple[Alternative, ...]] = {
    "imap": (
        Alternative(993, TlsMode.IMPLICIT, "IMAPS (implicit TLS) on 993"),
        Alternative(143, TlsMode.STARTTLS, "IMAP with STARTTLS on 143"),
    ),
    "pop3": (
        Alternative(995, TlsMode.IMPLICIT, "POP3S (implicit TLS) on 995"),
        Alternative(110, TlsMode.STARTTLS, "POP3 with STARTTLS on 110"),
    ),
    "smtp": (
        Alternative(587, TlsMode.STARTTLS, "SMTP submission with STARTTLS on 587"),
        Alternative(465, TlsMode.IMPLICIT, "SMTPS (implicit TLS) on 465"),
        Alternative(25, TlsMode.STARTTLS, "SMTP with STARTTLS on 25"),
    ),
}

_TLS_WORDS = {TlsMode.IMPLICIT: "implicit TLS", TlsMode.STARTTLS: "STARTTLS", TlsMode.NONE: "no TLS"}


def allowed_ports_for(preset: PortPreset, custom: Iterable[int] | None) -> list[int]:
    """The allow-list a preset stands for (``custom`` uses the given list, deduplicated in order)."""
    if preset == "custom":
        return list(dict.fromkeys(custom or ()))
    return list(PRESETS[preset])


def service_of(protocol: IncomingProtocol | None) -> Service:
    """``None`` stands for the outgoing side (SMTP)."""
    if protocol is None:
        return "smtp"
    return "imap" if protocol is IncomingProtocol.IMAP else "pop3"


def default_port(service: Service, tls: TlsMode) -> int:
    """The well-known port of a service in a TLS mode (RFC 8314, RFC 6186)."""
    if service == "smtp":
        return {TlsMode.IMPLICIT: 465, TlsMode.STARTTLS: 587, TlsMode.NONE: 25}[tls]
    if service == "imap":
        return 993 if tls is TlsMode.IMPLICIT else 143
    return 995 if tls is TlsMode.IMPLICIT else 110


def refusal(service: Service, port: int, tls: TlsMode, allowed: Iterable[int]) -> str | None:
    """Why ``port`` is refused and what to use instead; ``None`` when the port is allowed."""
    allowed_list = list(allowed)
    if port in allowed_list:
        return None
    what = f"{service.upper()} with {_TLS_WORDS[tls]} on port {port}"
    options = [alt for alt in _ALTERNATIVES[service] if alt.port in allowed_list]
    listed = ", ".join(str(p) for p in sorted(allowed_list)) or "none"
    if options:
        hint = f"use {options[0].label} instead"
    else:
        hint = f"no standard {service.upper()} port is allowed; ask an administrator to allow one"
    return f"{what} is not in the organisation's allowed ports ({listed}): {hint}"
