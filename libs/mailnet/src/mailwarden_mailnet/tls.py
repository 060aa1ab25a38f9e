"""TLS client contexts (TLS 1.2 minimum, system CAs plus an optional extra CA) and certificate facts."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime

from cryptography import x509

from contracts.errors import ErrorCode
from mailwarden_mailnet.errors import NetError

CertFacts = dict[str, str | int | bool | list[str]]


class TlsContexts:
    """Built once per process (loading CAs is slow); SSLContext objects are safe to share."""

    def __init__(self, ca_file: str | None = None) -> None:
        self.verifying = ssl.create_default_context()
        if ca_file:
            self.verifying.load_verify_locations(cafile=ca_file)
        self.verifying.minimum_version = ssl.TLSVersion.TLSv1_2
        self.unverified = ssl.create_default_context()
        self.unverified.check_hostname = False
        self.unverified.verify_mode = ssl.CERT_NONE
        self.unverified.minimum_version = ssl.TLSVersion.TLSv1_2

    def for_target(self, verify: bool) -> ssl.SSLContext:
        return self.verifying if verify else self.unverified


def _name_matches(host: str, names: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def cert_facts(der: bytes, host: str, now: datetime | None = None) -> CertFacts:
    """Issuer, subject, SANs, whether they match ``host``, and days until expiry."""
    cert = x509.load_der_x509_certificate(der)
    now = now or datetime.now(UTC)
    dns_names: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        match = str(ipaddress.ip_address(host)) in ips
    except ValueError:
        match = _name_matches(host, dns_names)
    not_after = cert.not_valid_after_utc
    return {
        "cert_subject": cert.subject.rfc4514_string()[:200],
        "cert_issuer": cert.issuer.rfc4514_string()[:200],
        "cert_san": (dns_names + ips)[:20],
        "cert_san_match": match,
        "cert_not_after": not_after.isoformat(),
        "cert_days_to_expiry": (not_after - now).days,
    }


@contextlib.contextmanager
def handshake_errors() -> Iterator[None]:
    """A connection reset or closed in the middle of a TLS handshake is a failed handshake."""
    try:
        yield
    except (ConnectionError, EOFError) as exc:
        raise NetError(
            ErrorCode.TLS_HANDSHAKE_FAILED, f"connection dropped in the handshake ({type(exc).__name__})"
        ) from None
