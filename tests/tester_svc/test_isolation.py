"""A dead server's queue must not hold back other hosts' tests (issue #16, isolation).

Many requests for a server that never answers, allowed one connection at a time, are queued
before one request for a working server. The tester runs the dead host's tests one by one (its
own limit), but the others' test is fetched and run at once: it does not wait for a worker that
the dead host's queue holds. Before ``tester_max_waiting`` every worker sat waiting for the dead
host's single slot and the unrelated test waited for their step timeouts.
"""

from __future__ import annotations

import time
import uuid

import nats
import pytest

from contracts.envelope import make_envelope, parse_envelope
from contracts.events import TestCompleted
from contracts.models import Endpoint, TlsMode
from contracts.models import TestStatus as Status
from contracts.subjects import TEST_COMPLETED, TEST_REQUESTED
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_servers import NatsServer, TestCertificates
from tester_svc.app import create_app

from . import fakes
from .conftest import NAMES, StartFake, announce_ports, make_request, settings_for

pytestmark = pytest.mark.integration

DEAD_QUEUE = 12
STEP_TIMEOUT_S = 3.0


async def test_a_dead_hosts_queue_does_not_delay_another_hosts_test(
    private_nats: NatsServer, certs: TestCertificates, fake_server: StartFake
) -> None:
    dead = await fake_server(fakes.silent)
    alive = await fake_server(fakes.imap())
    settings = settings_for(
        certs,
        nats_url=private_nats.url,
        tester_concurrency=4,
        tester_step_timeout_s=STEP_TIMEOUT_S,
        tester_test_timeout_s=60.0,
        tester_shared_limits=False,
    )
    await announce_ports(settings)
    app = create_app(settings, resolver=StaticResolver(NAMES))
    tag = uuid.uuid4().hex[:8]
    dead_requests = [
        make_request(
            incoming=Endpoint(host="other.example", port=dead.port, tls=TlsMode.NONE),
            allow_plaintext_auth=True,
            max_concurrent_connections=1,
            test_id=f"dead{tag}{n}",
            mailbox_id=f"dead{n}",
        )
        for n in range(DEAD_QUEUE)
    ]
    other = make_request(
        incoming=Endpoint(host="mail.test", port=alive.port, tls=TlsMode.NONE),
        allow_plaintext_auth=True,
        test_id=f"other{tag}",
    )
    async with app.router.lifespan_context(app):
        nc = await nats.connect(private_nats.url)
        try:
            sub = await nc.subscribe(TEST_COMPLETED)
            js = nc.jetstream()
            for req in [*dead_requests, other]:
                env = make_envelope(req, "pytest")
                await js.publish(TEST_REQUESTED, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
            t0 = time.monotonic()
            while True:
                msg = await sub.next_msg(timeout=4 * STEP_TIMEOUT_S * DEAD_QUEUE)
                done = parse_envelope(msg.data, TestCompleted).data
                if done.test_id == other.test_id:
                    break
            took = time.monotonic() - t0
            assert done.incoming is not None and done.incoming.status is Status.SUCCESS
            assert took < STEP_TIMEOUT_S, f"the other host's test waited {took:.1f} s behind the dead host"
            assert dead.peak <= 1, "the dead host's own limit still holds"
        finally:
            await nc.close()
