"""Probes against real Dovecot (IMAP/POP3, STARTTLS and implicit TLS) and real aiosmtpd SMTP."""

from __future__ import annotations

import pytest

from contracts.errors import ErrorCode, WarningCode
from contracts.models import Direction, Endpoint, IncomingProtocol, TlsMode
from contracts.models import TestStatus as Status
from mailwarden_servers import DovecotServer, SmtpServer
from tester_svc.runner import Runner

from .conftest import make_request

pytestmark = pytest.mark.integration


def steps(result: object) -> list[str]:
    return [s.name for s in result.steps]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("protocol", "port_attr", "tls"),
    [
        (IncomingProtocol.IMAP, "imaps_port", TlsMode.IMPLICIT),
        (IncomingProtocol.IMAP, "imap_port", TlsMode.STARTTLS),
        (IncomingProtocol.POP3, "pop3s_port", TlsMode.IMPLICIT),
        (IncomingProtocol.POP3, "pop3_port", TlsMode.STARTTLS),
    ],
)
async def test_incoming_success(
    runner: Runner, dovecot: DovecotServer, protocol: IncomingProtocol, port_attr: str, tls: TlsMode
) -> None:
    ep = Endpoint(host="mail.test", port=getattr(dovecot, port_attr), tls=tls)
    done = await runner.run(make_request(incoming=ep, protocol=protocol))
    res = done.incoming
    assert res is not None and done.outgoing is None
    assert res.status is Status.SUCCESS, res.error
    names = steps(res)
    assert names[:4] == ["credentials", "policy", "resolve", "address_policy"]
    assert names[-2:] == ["inbox", "logout"]
    tls_step = next(s for s in res.steps if s.name in ("tls", "starttls"))
    assert tls_step.facts["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert tls_step.facts["cert_san_match"] is True
    assert isinstance(tls_step.facts["cert_days_to_expiry"], int)
    inbox = next(s for s in res.steps if s.name == "inbox")
    assert inbox.facts["message_count"] == 0 or isinstance(inbox.facts["message_count"], int)
    if protocol is IncomingProtocol.IMAP:
        assert isinstance(inbox.facts["uidvalidity"], int)
    if tls is TlsMode.STARTTLS:
        # Dovecot trusts loopback, so it offers login before TLS: a warning, not a failure.
        assert [w.code for w in res.warnings] == [WarningCode.PLAINTEXT_LOGIN_OFFERED]
    else:
        assert res.warnings == []


@pytest.mark.parametrize(
    ("port_attr", "tls"), [("port_starttls", TlsMode.STARTTLS), ("port_tls", TlsMode.IMPLICIT)]
)
async def test_smtp_success(runner: Runner, smtp_server: SmtpServer, port_attr: str, tls: TlsMode) -> None:
    before = smtp_server.message_count
    ep = Endpoint(host="mail.test", port=getattr(smtp_server, port_attr), tls=tls)
    done = await runner.run(make_request(outgoing=ep))
    res = done.outgoing
    assert res is not None and res.status is Status.SUCCESS, res and res.error
    envelope = next(s for s in res.steps if s.name == "envelope")
    assert envelope.facts == {"mode": "dry_run", "mail_from": 250, "rcpt_to": 250, "rset": 250}
    assert smtp_server.message_count == before  # a dry run sends nothing


async def test_both_directions_concurrently(
    runner: Runner, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    done = await runner.run(
        make_request(
            incoming=Endpoint(host="mail.test", port=dovecot.imaps_port, tls=TlsMode.IMPLICIT),
            outgoing=Endpoint(host="mail.test", port=smtp_server.port_tls, tls=TlsMode.IMPLICIT),
        )
    )
    assert done.succeeded
    assert [r.direction for r in done.results] == [Direction.INCOMING, Direction.OUTGOING]


@pytest.mark.parametrize(
    ("protocol", "port_attr", "tls"),
    [
        (IncomingProtocol.IMAP, "imaps_port", TlsMode.IMPLICIT),
        (IncomingProtocol.POP3, "pop3_port", TlsMode.STARTTLS),
    ],
)
async def test_wrong_password_incoming(
    make_runner: object, dovecot: DovecotServer, protocol: IncomingProtocol, port_attr: str, tls: TlsMode
) -> None:
    runner = make_runner()  # type: ignore[operator]
    ep = Endpoint(host="mail.test", port=getattr(dovecot, port_attr), tls=tls)
    done = await runner.run(make_request(incoming=ep, protocol=protocol, password="not-the-password"))
    res = done.incoming
    assert res is not None and res.error is not None
    assert res.error.code is ErrorCode.AUTH_FAILED
    assert res.error.step == "auth"
    assert res.error.scope == "mailbox" and res.error.transient is False
    auth = next(s for s in res.steps if s.name == "auth")
    assert auth.facts["response_code"] == (
        "AUTHENTICATIONFAILED" if protocol is IncomingProtocol.IMAP else "AUTH"
    )
    assert "not-the-password" not in done.model_dump_json()


async def test_wrong_password_smtp(runner: Runner, smtp_server: SmtpServer) -> None:
    ep = Endpoint(host="mail.test", port=smtp_server.port_starttls, tls=TlsMode.STARTTLS)
    done = await runner.run(make_request(outgoing=ep, password="not-the-password"))
    assert done.outgoing is not None and done.outgoing.error is not None
    assert done.outgoing.error.code is ErrorCode.AUTH_FAILED
    auth = next(s for s in done.outgoing.steps if s.name == "auth")
    assert auth.facts["reply_code"] == 535


async def test_recipient_refused(runner: Runner, smtp_server: SmtpServer) -> None:
    smtp_server.refuse_rcpt("refused@mail.test")
    ep = Endpoint(host="mail.test", port=smtp_server.port_tls, tls=TlsMode.IMPLICIT)
    done = await runner.run(make_request(outgoing=ep, email="refused@mail.test"))
    assert done.outgoing is not None and done.outgoing.error is not None
    assert done.outgoing.error.code is ErrorCode.RECIPIENT_REFUSED
    assert done.outgoing.error.step == "envelope"
