"""Send mode: SMTP sends a test message to the mailbox itself, IMAP finds it and deletes it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from contracts.models import Direction, Endpoint, TlsMode
from contracts.models import TestStatus as Status
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates
from mailwarden_servers.smtp import ReceivedMessage
from tester_svc.runner import Runner

from .conftest import make_request

pytestmark = pytest.mark.integration


class DeliveringSmtp(SmtpServer):
    """The test SMTP server, plus delivery of every accepted message into Dovecot."""

    def __init__(self, dovecot: DovecotServer, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dovecot = dovecot

    def _record(self, message: ReceivedMessage) -> None:
        super()._record(message)
        for rcpt in message.rcpt_tos:
            self.dovecot.deliver(rcpt.split("@", 1)[0], message.data)


@pytest.fixture
def delivering(dovecot: DovecotServer, certs: TestCertificates) -> Iterator[DeliveringSmtp]:
    server = DeliveringSmtp(dovecot, certs, dovecot.users)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_send_find_and_delete(
    make_runner: Callable[..., Runner],
    dovecot: DovecotServer,
    delivering: DeliveringSmtp,
    new_mail_user: Callable[..., tuple[str, str]],
) -> None:
    # The test SMTP server delivers into Dovecot (a dovecot-lda run) before it answers DATA: on a
    # loaded machine that alone took the 2 s step budget the other tests use.
    runner = make_runner(tester_step_timeout_s=15.0, tester_test_timeout_s=40.0)
    user, password = new_mail_user()
    delivering.set_password(user, password)
    req = make_request(
        incoming=Endpoint(host="mail.test", port=dovecot.imaps_port, tls=TlsMode.IMPLICIT),
        outgoing=Endpoint(host="mail.test", port=delivering.port_tls, tls=TlsMode.IMPLICIT),
        user=user,
        password=password,
        email=f"{user}@mail.test",
        smtp_mode="send",
        test_id="send1",
    )
    done = await runner.run(req)
    assert done.outgoing is not None and done.incoming is not None
    assert done.outgoing.status is Status.SUCCESS, done.outgoing.error
    assert done.incoming.status is Status.SUCCESS, done.incoming.error
    assert delivering.messages[-1].rcpt_tos == [f"{user}@mail.test"]
    assert b"X-Mailwarden-Test: send1-1" in delivering.messages[-1].data
    found = next(s for s in done.incoming.steps if s.name == "find_message")
    assert found.facts["found"] is True and found.facts["deleted"] is True

    # The message is gone again: a dry run sees an empty INBOX.
    again = await runner.run(
        make_request(
            incoming=req.target.incoming, user=user, password=password, directions=[Direction.INCOMING]
        )
    )
    assert again.incoming is not None
    inbox = next(s for s in again.incoming.steps if s.name == "inbox")
    assert inbox.facts["message_count"] == 0
