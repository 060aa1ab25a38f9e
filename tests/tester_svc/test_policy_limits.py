"""Egress policy (zero connections when denied), certificates, credentials, breaker and host limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from contracts.errors import CATALOG, ErrorCode, WarningCode
from contracts.events import SealedCredentials
from contracts.models import CredentialSource, DirectionResult, Endpoint, IncomingProtocol, TlsMode
from contracts.models import TestStatus as Status
from mailwarden_mailnet.resolve import StaticResolver, SystemResolver
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates
from tester_svc.runner import Runner

from . import fakes
from .conftest import MAIL_USERS_FOR_SMTP, NAMES, StartFake, make_request, seal_for, seal_login


def names(result: DirectionResult) -> list[str]:
    return [s.name for s in result.steps]


async def imap_result(
    runner: Runner, host: str, port: int, tls: TlsMode = TlsMode.IMPLICIT, **kw: object
) -> DirectionResult:
    done = await runner.run(make_request(incoming=Endpoint(host=host, port=port, tls=tls), **kw))  # type: ignore[arg-type]
    assert done.incoming is not None
    return done.incoming


# --- policy -----------------------------------------------------------------------------------
async def test_loopback_denied_unless_allowed(
    make_runner: Callable[..., Runner], fake_server: StartFake
) -> None:
    fake = await fake_server(fakes.imap())
    strict = make_runner(tester_allow_networks="")
    result = await imap_result(strict, "127.0.0.1", fake.port, TlsMode.NONE, allow_plaintext_auth=True)
    assert result.error is not None and result.error.code is ErrorCode.ADDRESS_NOT_ALLOWED
    assert result.error.step == "address_policy"
    assert "tcp" not in names(result)
    assert fake.connections == 0
    # The operator setting that allows the range is named in the step and in the catalog's remedy.
    policy = next(s for s in result.steps if s.name == "address_policy")
    assert policy.detail is not None and "MW_TESTER_ALLOW_NETWORKS" in policy.detail
    assert "MW_TESTER_ALLOW_NETWORKS" in CATALOG[ErrorCode.ADDRESS_NOT_ALLOWED].remediation


async def test_localhost_name_denied(make_runner: Callable[..., Runner], fake_server: StartFake) -> None:
    """A real lookup of "localhost" gives loopback addresses: denied before any socket."""
    fake = await fake_server(fakes.imap())
    strict = make_runner(SystemResolver(), tester_allow_networks="")
    result = await imap_result(strict, "localhost", fake.port, TlsMode.NONE, allow_plaintext_auth=True)
    assert result.error is not None and result.error.code is ErrorCode.ADDRESS_NOT_ALLOWED
    assert fake.connections == 0
    # The trace does not tell what the name resolved to (no internal-network oracle).
    assert "127.0.0.1" not in result.model_dump_json() and "::1" not in result.model_dump_json()
    resolve = next(s for s in result.steps if s.name == "resolve")
    assert "addresses" not in resolve.facts and resolve.facts["count"] >= 1  # type: ignore[operator]


@pytest.mark.parametrize(
    "host",
    [
        "10.1.2.3",
        "192.168.1.10",
        "169.254.169.254",
        "100.100.100.200",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "fd00:ec2::254",
        "fe80::1",
        "::1",
        "0.0.0.0",
        "224.0.0.1",
        "intranet.example",
        "mixed.example",
    ],
)
async def test_non_public_targets_denied(make_runner: Callable[..., Runner], host: str) -> None:
    resolver = StaticResolver(
        {"intranet.example": ["10.0.0.5"], "mixed.example": ["93.184.216.34", "10.0.0.1"]}
    )
    runner = make_runner(resolver)  # 127.0.0.0/8 is allowed, yet IPv4 hidden in IPv6 stays denied
    result = await imap_result(runner, host, 993, allowed_ports=[993])
    assert result.error is not None and result.error.code is ErrorCode.ADDRESS_NOT_ALLOWED
    assert "tcp" not in names(result)
    detail = next(s for s in result.steps if s.name == "address_policy").detail or ""
    if host.endswith(".example"):  # what the name resolved to is not in the trace
        dumped = result.model_dump_json()
        assert not any(a in dumped for a in ("10.0.0.5", "10.0.0.1", "93.184.216.34")), dumped
    # Only private and loopback ranges are the operator's to allow; the rest is never suggested.
    allowable = host in {
        "10.1.2.3",
        "192.168.1.10",
        "fd00:ec2::254",
        "::1",
        "intranet.example",
        "mixed.example",
    }
    assert ("MW_TESTER_ALLOW_NETWORKS" in detail) is allowable, detail


async def test_port_not_allowed(runner: Runner, fake_server: StartFake) -> None:
    fake = await fake_server(fakes.imap())
    result = await imap_result(runner, "mail.test", fake.port, allowed_ports=[993, 995])
    assert result.error is not None and result.error.code is ErrorCode.PORT_NOT_ALLOWED
    assert names(result) == ["credentials", "policy"]  # not even a DNS lookup
    assert fake.connections == 0
    assert "allowed ports" in (result.steps[-1].detail or "")
    assert "allowed_ports" in CATALOG[ErrorCode.PORT_NOT_ALLOWED].remediation


async def test_plaintext_needs_permission(runner: Runner, fake_server: StartFake) -> None:
    fake = await fake_server(fakes.imap())
    result = await imap_result(runner, "mail.test", fake.port, TlsMode.NONE)
    assert result.error is not None and result.error.code is ErrorCode.PLAINTEXT_NOT_ALLOWED
    assert fake.connections == 0


async def test_dns_failures(make_runner: Callable[..., Runner]) -> None:
    nx = await imap_result(make_runner(StaticResolver({})), "nowhere.example", 993, allowed_ports=[993])
    assert nx.error is not None and nx.error.code is ErrorCode.DNS_NXDOMAIN
    slow = make_runner(StaticResolver(NAMES, delay_s=5.0), tester_dns_timeout_s=0.2)
    timed_out = await imap_result(slow, "mail.test", 993, allowed_ports=[993])
    assert timed_out.error is not None and timed_out.error.code is ErrorCode.DNS_TIMEOUT


async def test_refused(runner: Runner, fake_server: StartFake) -> None:
    fake = await fake_server(fakes.imap())
    assert fake.server is not None
    fake.server.close()
    await fake.server.wait_closed()
    result = await imap_result(runner, "mail.test", fake.port)
    assert result.error is not None and result.error.code is ErrorCode.TCP_REFUSED
    assert result.error.step == "tcp"


# --- certificates -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("expired", ErrorCode.CERT_EXPIRED),
        ("self_signed", ErrorCode.CERT_UNTRUSTED),
        ("wrong_host", ErrorCode.CERT_HOSTNAME_MISMATCH),
    ],
)
async def test_bad_certificates(
    runner: Runner, fake_server: StartFake, certs: TestCertificates, variant: str, expected: ErrorCode
) -> None:
    fake = await fake_server(fakes.imap(), certs.server_context(getattr(certs, variant)))
    result = await imap_result(runner, "mail.test", fake.port)
    assert result.error is not None and result.error.code is expected
    assert result.error.step == "tls"
    assert fake.received == bytearray()  # not one byte of IMAP, let alone credentials
    if expected is ErrorCode.CERT_UNTRUSTED:  # the CA setting is named where it is the way out
        assert "MW_TESTER_CA_FILE" in (result.steps[-1].detail or "")
        assert "MW_TESTER_CA_FILE" in CATALOG[expected].remediation


async def test_hostname_mismatch_on_real_dovecot(runner: Runner, dovecot: DovecotServer) -> None:
    result = await imap_result(runner, "other.example", dovecot.imaps_port)
    assert result.error is not None and result.error.code is ErrorCode.CERT_HOSTNAME_MISMATCH


async def test_expired_certificate_on_smtp_starttls(runner: Runner, certs: TestCertificates) -> None:
    with SmtpServer(certs, MAIL_USERS_FOR_SMTP, certs.expired) as smtp:
        ep = Endpoint(host="mail.test", port=smtp.port_starttls, tls=TlsMode.STARTTLS)
        done = await runner.run(make_request(outgoing=ep))
        assert done.outgoing is not None and done.outgoing.error is not None
        assert done.outgoing.error.code is ErrorCode.CERT_EXPIRED
        assert done.outgoing.error.step == "starttls"
        assert smtp.auth_attempts == 0


async def test_expiring_soon_warns(runner: Runner, fake_server: StartFake, certs: TestCertificates) -> None:
    fake = await fake_server(fakes.imap(), certs.server_context(certs.expiring_soon))
    result = await imap_result(runner, "mail.test", fake.port)
    assert result.status is Status.SUCCESS
    assert [w.code for w in result.warnings] == [WarningCode.CERT_EXPIRING_SOON]
    tls = next(s for s in result.steps if s.name == "tls")
    assert tls.facts["cert_days_to_expiry"] in (4, 5)
    allowed = next(s for s in result.steps if s.name == "address_policy")
    assert allowed.facts["addresses"] == ["127.0.0.1"]  # an allowed server's addresses are shown


async def test_verification_disabled(runner: Runner, fake_server: StartFake, certs: TestCertificates) -> None:
    fake = await fake_server(fakes.imap(), certs.server_context(certs.self_signed))
    result = await imap_result(runner, "mail.test", fake.port, verify_tls=False)
    assert result.status is Status.SUCCESS
    assert WarningCode.TLS_VERIFICATION_DISABLED in [w.code for w in result.warnings]


# --- credentials ------------------------------------------------------------------------------
async def test_missing_credentials(runner: Runner, fake_server: StartFake) -> None:
    fake = await fake_server(fakes.imap())
    result = await imap_result(runner, "mail.test", fake.port, sealed=None)
    assert result.error is not None and result.error.code is ErrorCode.CREDENTIALS_MISSING
    assert fake.connections == 0


async def test_a_captured_sealed_login_opens_for_no_other_test_server_or_time(
    runner: Runner, fake_server: StartFake
) -> None:
    """A blob copied from the stream into a request of the attacker's: no byte leaves the tester."""
    fake = await fake_server(fakes.imap())
    here = Endpoint(host="mail.test", port=fake.port, tls=TlsMode.IMPLICIT)
    elsewhere = Endpoint(host="evil.test", port=fake.port, tls=TlsMode.IMPLICIT)
    other_port = Endpoint(host="mail.test", port=993, tls=TlsMode.IMPLICIT)
    captured = {
        "another test": seal_for("t-other", "incoming", here, "alice", "alice-pw"),
        "another host": seal_for("t1", "incoming", elsewhere, "alice", "alice-pw"),
        "another port": seal_for("t1", "incoming", other_port, "alice", "alice-pw"),
        "another direction": seal_for("t1", "outgoing", here, "alice", "alice-pw"),
        "expired": seal_for("t1", "incoming", here, "alice", "alice-pw", ttl_s=-1),
        "the old mailbox binding": seal_login("alice", "alice-pw", "mailbox:mbx1:incoming"),
        "the profile event's binding": seal_login("alice", "alice-pw", "profile:prof1:incoming"),
    }
    for name, blob in captured.items():
        result = await imap_result(
            runner, "mail.test", fake.port, test_id="t1", sealed=SealedCredentials(incoming=blob)
        )
        assert result.error is not None and result.error.code is ErrorCode.CREDENTIALS_UNREADABLE, name
    assert fake.connections == 0


async def test_profile_credentials(runner: Runner, dovecot: DovecotServer) -> None:
    here = Endpoint(host="mail.test", port=dovecot.imaps_port, tls=TlsMode.IMPLICIT)
    sealed = SealedCredentials(incoming=seal_for("t1", "incoming", here, "bob", "bob-pw"))
    result = await imap_result(
        runner, "mail.test", dovecot.imaps_port, sealed=sealed, credential_source=CredentialSource.PROFILE
    )
    assert result.status is Status.SUCCESS, result.error


# --- breaker ----------------------------------------------------------------------------------
async def test_breaker_never_retries_a_definite_failure(
    make_runner: Callable[..., Runner], dovecot: DovecotServer
) -> None:
    runner = make_runner(tester_breaker_window_s=900)
    before = datetime.now(UTC)
    first = await imap_result(runner, "mail.test", dovecot.imaps_port, password="wrong-1")
    assert first.error is not None and first.error.code is ErrorCode.AUTH_FAILED
    again = await imap_result(runner, "mail.test", dovecot.imaps_port, password="wrong-1")
    assert again.error is not None and again.error.code is ErrorCode.AUTH_BREAKER_OPEN
    assert names(again) == ["credentials"]  # no connection at all
    # The result says which earlier failure paused it and when logins resume.
    step = again.steps[0]
    failed_at = datetime.fromisoformat(str(step.facts["failed_at"]))
    resume_at = datetime.fromisoformat(str(step.facts["resume_at"]))
    assert step.facts["paused_by"] == "same_password"
    assert before - timedelta(seconds=2) <= failed_at <= datetime.now(UTC)
    assert abs((resume_at - failed_at).total_seconds() - 900) < 1
    assert step.detail is not None and "same password" in step.detail
    assert failed_at.strftime("%H:%M:%S") in step.detail and resume_at.strftime("%H:%M:%S") in step.detail
    fixed = await imap_result(runner, "mail.test", dovecot.imaps_port)  # a corrected password may try
    assert fixed.status is Status.SUCCESS


async def test_breaker_opens_after_threshold(
    make_runner: Callable[..., Runner], dovecot: DovecotServer
) -> None:
    runner = make_runner(tester_breaker_threshold=2)
    for pw in ("wrong-a", "wrong-b"):
        r = await imap_result(
            runner, "mail.test", dovecot.pop3s_port, protocol=IncomingProtocol.POP3, password=pw
        )
        assert r.error is not None and r.error.code is ErrorCode.AUTH_FAILED
    blocked = await imap_result(runner, "mail.test", dovecot.pop3s_port, protocol=IncomingProtocol.POP3)
    assert blocked.error is not None and blocked.error.code is ErrorCode.AUTH_BREAKER_OPEN
    assert blocked.error.transient is True
    assert (
        blocked.steps[0].facts["paused_by"] == "repeated_failures" and blocked.steps[0].facts["failures"] == 2
    )
    assert "2 definite login failures" in (blocked.steps[0].detail or "")
    other_user = await imap_result(
        runner, "mail.test", dovecot.pop3s_port, protocol=IncomingProtocol.POP3, user="bob", password="bob-pw"
    )
    assert other_user.status is Status.SUCCESS  # the breaker is per user, not per host


# --- concurrency ------------------------------------------------------------------------------
async def test_per_host_limit_observed_by_server(runner: Runner, fake_server: StartFake) -> None:
    fake = await fake_server(fakes.imap(delay_s=0.05))
    reqs = [
        make_request(
            incoming=Endpoint(host="mail.test", port=fake.port, tls=TlsMode.NONE),
            allow_plaintext_auth=True,
            max_concurrent_connections=2,
            test_id=f"c{i}",
            mailbox_id=f"m{i}",
        )
        for i in range(6)
    ]
    done = await asyncio.gather(*(runner.run(r) for r in reqs))
    assert all(d.succeeded for d in done)
    assert fake.connections == 6
    assert fake.peak == 2
