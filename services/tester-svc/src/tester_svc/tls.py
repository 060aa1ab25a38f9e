"""The TLS facts and warnings of a test step (the contexts and certificate facts: mailwarden_mailnet.tls)."""

from __future__ import annotations

import ssl

from contracts.errors import WarningCode
from mailwarden_mailnet.tls import cert_facts
from tester_svc.trace import Facts, Trace

EXPIRY_WARNING_DAYS = 14
_STRONG_KX = ("ECDHE", "DHE")
_AEAD = ("GCM", "CHACHA20", "CCM")


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
