"""TLS client contexts (TLS 1.2 minimum, system CAs plus an optional extra CA) and certificate facts."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime

from cryptography import x509

from contracts.errors import WarningCode
from tester_svc.trace import Facts, Trace

EXPIRY_WARNING_DAYS = 14
_STRONG_KX = ("ECDHE", "DHE")
_AEAD = ("GCM", "CHACHA20", "CCM")


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


def cert_facts(der: bytes, host: str, now: datetime | None = None) -> Facts:
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


def record_tls(obj: ssl.SSLObject | None, host: str, verified: bool, facts: Facts, trace: Trace) -> None:
    """Put the negotiated version, cipher and certificate into ``facts``; add the TLS warnings."""
    if obj is None:
        return
    version = obj.version()
    cipher = obj.cipher()
    facts["tls_version"] = version
    facts["tls_cipher"] = cipher[0] if cipher else None
    facts["tls_verified"] = verified
    if not verified:
        trace.warn(WarningCode.TLS_VERIFICATION_DISABLED)
    if version == "TLSv1.2" and cipher is not None:
        name = cipher[0]
        if not any(k in name for k in _STRONG_KX) or not any(a in name for a in _AEAD):
            trace.warn(WarningCode.WEAK_TLS)
    der = obj.getpeercert(binary_form=True)
    if der:
        try:
            facts.update(cert_facts(der, host))
        except ValueError:
            facts["cert_parse_error"] = True
            return
        days = facts.get("cert_days_to_expiry")
        if isinstance(days, int) and days < EXPIRY_WARNING_DAYS:
            trace.warn(WarningCode.CERT_EXPIRING_SOON)
