"""The overhead row's fake tester: success without a connection, and never outside dev mode."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts.events import TestRequested
from contracts.models import (
    Direction,
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    ServerTarget,
    TestStatus,
    TlsMode,
)
from tester_svc.app import create_app
from tester_svc.config import Settings
from tester_svc.fake import FakeSuccessRunner

OWNER = Owner(kind=OwnerKind.USER, id="u1", name="U One")


def _request(directions: list[Direction]) -> TestRequested:
    # Port 9 on a documentation address: a real probe would fail; the fake must not connect.
    ep = Endpoint(host="192.0.2.1", port=9, tls=TlsMode.IMPLICIT)
    return TestRequested(
        test_id="t1",
        mailbox=MailboxRef(
            mailbox_id="m1", email="m1@mail.test", owner=OWNER, profile_id="p1", profile_owner=OWNER
        ),
        target=ServerTarget(
            profile_id="p1",
            profile_name="p",
            incoming_protocol=IncomingProtocol.IMAP,
            incoming=ep,
            outgoing=ep,
        ),
        directions=directions,
        requested_at=datetime.now(UTC),
    )


async def test_fake_runner_answers_success_for_the_requested_directions_only() -> None:
    done = await FakeSuccessRunner("bench").run(_request([Direction.OUTGOING]))
    assert done.incoming is None
    assert done.outgoing is not None and done.outgoing.status is TestStatus.SUCCESS
    assert done.outgoing.protocol == "smtp" and done.succeeded
    both = await FakeSuccessRunner("bench").run(_request([Direction.INCOMING, Direction.OUTGOING]))
    assert both.incoming is not None and both.incoming.protocol == "imap" and both.succeeded


def test_fake_mode_is_refused_outside_dev_mode() -> None:
    settings = Settings(
        tester_fake_success_for_benchmarks=True,
        dev_mode=False,
        transit_keys="k1:" + "A" * 43 + "=",
        log_setup=False,
    )
    with pytest.raises(RuntimeError, match="MW_DEV_MODE"):
        create_app(settings)
