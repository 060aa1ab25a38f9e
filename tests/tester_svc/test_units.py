"""Pure logic: address policy, protocol-code classification, the breaker, certificate facts, settings."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from contracts.errors import ErrorCode, WarningCode
from mailwarden_mailnet.classify import (
    IMAP_AUTH_CODES,
    classify_tls_error,
    imap_failure,
    pop3_failure,
    smtp_auth_failure,
    smtp_envelope_failure,
)
from mailwarden_mailnet.policy import address_allowed, check_addresses, embedded_ipv4, parse_networks
from mailwarden_mailnet.tls import cert_facts
from tester_svc.catalog import render_markdown
from tester_svc.config import Settings
from tester_svc.limits import AuthBreaker, ConnectionLimiter
from tester_svc.trace import clean_detail

DENIED = [
    "0.0.0.0", "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.0.1", "169.254.169.254",
    "100.64.0.1", "100.100.100.200", "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "::", "::1", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
    "2002:a9fe:a9fe::1", "2002:7f00:1::", "2001:db8::1", "192.0.2.1",
]  # fmt: skip
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("text", DENIED)
def test_denied_addresses(text: str) -> None:
    assert check_addresses([text], []) == [text]


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses(text: str) -> None:
    assert check_addresses([text], []) == []


def test_one_bad_address_denies_the_name() -> None:
    assert check_addresses(["8.8.8.8", "10.0.0.1"], []) == ["10.0.0.1"]


def test_unparsable_fails_closed() -> None:
    assert check_addresses(["not-an-ip"], []) == ["not-an-ip"]


def test_operator_allow_list() -> None:
    allow = parse_networks("127.0.0.0/8, 10.20.0.0/16")
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow)
    assert address_allowed(ipaddress.ip_address("10.20.1.1"), allow)
    assert not address_allowed(ipaddress.ip_address("10.21.1.1"), allow)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow)


def test_teredo_client_is_unwrapped() -> None:
    # Teredo client 10.0.0.1 (obfuscated as ~10.0.0.1) behind public server 65.54.227.120.
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:f5ff:fffe")
    assert ipaddress.IPv4Address("10.0.0.1") in embedded_ipv4(teredo)
    assert not address_allowed(teredo, [])


def test_settings_reject_bad_network() -> None:
    with pytest.raises(ValidationError, match="tester_allow_networks"):
        Settings(tester_allow_networks="127.0.0.0/8,nonsense")


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        ("NO", b"[AUTHENTICATIONFAILED] Authentication failed.", ErrorCode.AUTH_FAILED),
        ("NO", b"[UNAVAILABLE] Temporary authentication failure.", ErrorCode.AUTH_TEMPORARY),
        ("NO", b"[PRIVACYREQUIRED] Use TLS", ErrorCode.PLAINTEXT_NOT_ALLOWED),
        ("NO", b"[EXPIRED] password expired", ErrorCode.AUTH_FAILED),
        ("NO", b"Authentication failed [UNAVAILABLE] in the text", ErrorCode.AUTH_FAILED),
        ("BAD", b"[UNAVAILABLE] x", ErrorCode.AUTH_TEMPORARY),
        ("BAD", b"syntax", ErrorCode.PROTOCOL_VIOLATION),
    ],
)
def test_imap_codes(status: str, text: bytes, expected: ErrorCode) -> None:
    assert imap_failure(status, text, IMAP_AUTH_CODES, ErrorCode.AUTH_FAILED) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"[AUTH] Authentication failed.", ErrorCode.AUTH_FAILED),
        (b"[SYS/TEMP] try later", ErrorCode.AUTH_TEMPORARY),
        (b"[SYS/PERM] disabled", ErrorCode.SERVER_PERMANENT_ERROR),
        (b"[IN-USE] maildrop locked", ErrorCode.ACCOUNT_IN_USE),
        (b"[SYS/FUTURE] unknown sub-code", ErrorCode.AUTH_FAILED),
        (b"temporary problem, in use", ErrorCode.AUTH_FAILED),  # words are not codes
    ],
)
def test_pop3_codes(text: bytes, expected: ErrorCode) -> None:
    assert pop3_failure(text, ErrorCode.AUTH_FAILED) is expected


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (535, b"5.7.8 Authentication credentials invalid", ErrorCode.AUTH_FAILED),
        (454, b"4.7.0 Temporary authentication failure", ErrorCode.AUTH_TEMPORARY),
        (534, b"5.7.9 Authentication mechanism is too weak", ErrorCode.AUTH_MECHANISM_UNSUPPORTED),
        (538, b"5.7.11 Encryption required", ErrorCode.PLAINTEXT_NOT_ALLOWED),
        (550, b"5.7.1 policy", ErrorCode.AUTH_FAILED),
        (554, b"no enhanced code", ErrorCode.SERVER_PERMANENT_ERROR),
    ],
)
def test_smtp_auth_codes(code: int, text: bytes, expected: ErrorCode) -> None:
    assert smtp_auth_failure(code, text) is expected


def test_smtp_envelope_codes() -> None:
    assert (
        smtp_envelope_failure(550, b"5.1.1 no such user", ErrorCode.RECIPIENT_REFUSED)
        is ErrorCode.RECIPIENT_REFUSED
    )
    assert (
        smtp_envelope_failure(553, b"5.7.1 not yours", ErrorCode.SENDER_REFUSED) is ErrorCode.SENDER_REFUSED
    )
    assert (
        smtp_envelope_failure(451, b"4.3.0 later", ErrorCode.SENDER_REFUSED)
        is ErrorCode.SERVER_TEMPORARY_ERROR
    )
    assert (
        smtp_envelope_failure(552, b"5.3.4 too big", ErrorCode.SENDER_REFUSED)
        is ErrorCode.SERVER_PERMANENT_ERROR
    )


def test_tls_verify_codes() -> None:
    def verify_error(code: int) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError(1, "x")
        exc.verify_code = code
        return exc

    assert classify_tls_error(verify_error(10)).code is ErrorCode.CERT_EXPIRED
    assert classify_tls_error(verify_error(62)).code is ErrorCode.CERT_HOSTNAME_MISMATCH
    assert classify_tls_error(verify_error(20)).code is ErrorCode.CERT_UNTRUSTED
    assert classify_tls_error(verify_error(19)).code is ErrorCode.CERT_UNTRUSTED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_window() -> None:
    clock = Clock()
    breaker = AuthBreaker(threshold=3, window_s=60, clock=clock)
    breaker.record_failure("Mail.Test", "alice", "bad1")
    assert breaker.is_open("mail.test", "alice", "bad1")  # same credentials: never again in the window
    assert not breaker.is_open("mail.test", "alice", "good")
    breaker.record_failure("mail.test", "alice", "bad2")
    breaker.record_failure("mail.test", "alice", "bad3")
    assert breaker.is_open("mail.test", "alice", "good")  # threshold reached: everything pauses
    assert not breaker.is_open("mail.test", "bob", "x")
    assert not breaker.is_open("other.test", "alice", "bad1")
    clock.now += 61
    assert not breaker.is_open("mail.test", "alice", "bad1")
    breaker.record_failure("mail.test", "alice", "bad1")
    breaker.record_success("mail.test", "alice")
    assert not breaker.is_open("mail.test", "alice", "bad1")


def _cert(names: list[str], days: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days, hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def test_cert_facts() -> None:
    facts = cert_facts(_cert(["*.example.com", "mail.test"], 30), "imap.example.com")
    assert facts["cert_san_match"] is True
    assert facts["cert_days_to_expiry"] == 30
    assert facts["cert_issuer"] == "CN=mail"
    assert cert_facts(_cert(["*.example.com"], 30), "a.b.example.com")["cert_san_match"] is False


def test_clean_detail_redacts() -> None:
    assert (
        clean_detail("NO you said LOGIN a s3cret\x00\x1b", ("s3cret",)) == "NO you said LOGIN a [redacted]  "
    )


def test_operator_ranges_do_not_cover_hidden_ipv4() -> None:
    allow = parse_networks("127.0.0.0/8")
    assert not address_allowed(ipaddress.ip_address("64:ff9b::7f00:1"), allow)
    assert not address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), allow)


def test_catalog_document_lists_every_code() -> None:
    text = render_markdown()
    for code in ErrorCode:
        assert f"`{code.value}`" in text
    for warning in WarningCode:
        assert f"`{warning.value}`" in text


async def test_waiting_for_a_busy_host_holds_no_global_slot() -> None:
    limiter = ConnectionLimiter(global_limit=2)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(host: str) -> None:
        async with limiter.slot(host, 1):
            held.set()
            await release.wait()

    first = asyncio.create_task(hold("busy.example"))
    await held.wait()
    queued = asyncio.create_task(hold("busy.example"))  # waits for the host, not for a global slot
    await asyncio.sleep(0)

    async def other_host() -> None:
        async with limiter.slot("free.example", 5):
            pass

    await asyncio.wait_for(other_host(), timeout=2)
    release.set()
    await asyncio.gather(first, queued)
