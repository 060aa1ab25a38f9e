"""No credential, in any encoding, reaches logs, results or metrics, even with every logger at DEBUG."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from contracts.models import Endpoint, TlsMode
from mailwarden_servers import DovecotServer, SmtpServer
from tester_svc.runner import Runner

from . import fakes
from .conftest import StartFake, make_request

CANARY = "canary-Pw-7f3a"


def forms(secret: str) -> list[str]:
    return [
        secret,
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(b"\0alice\0" + secret.encode()).decode(),
    ]


async def test_canary_password_never_leaks(
    make_runner: Callable[..., Runner],
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    fake_server: StartFake,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = make_runner(tester_step_timeout_s=0.5)
    echo = await fake_server(fakes.imap(caps=b"IMAP4rev1", login_reply=b"NO [AUTHENTICATIONFAILED] nope"))
    requests = [
        make_request(
            incoming=Endpoint(host="mail.test", port=dovecot.imap_port, tls=TlsMode.STARTTLS),
            outgoing=Endpoint(host="mail.test", port=smtp_server.port_starttls, tls=TlsMode.STARTTLS),
            password=CANARY,
        ),
        make_request(
            incoming=Endpoint(host="127.0.0.1", port=echo.port, tls=TlsMode.NONE),
            allow_plaintext_auth=True,
            password=CANARY,
            mailbox_id="mbx2",
        ),
    ]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger().setLevel(logging.DEBUG)
        results = [await runner.run(r) for r in requests]
    assert any(r.incoming and r.incoming.error for r in results)
    assert CANARY.encode() in echo.received  # the secret really was used
    haystacks = [caplog.text, generate_latest().decode(), *(r.model_dump_json() for r in results)]
    for hay in haystacks:
        for form in forms(CANARY):
            assert form not in hay
