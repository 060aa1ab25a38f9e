"""tester-svc: consumes TestRequested, probes the servers, publishes TestCompleted. No database.

Run: ``uvicorn --factory tester_svc.app:create_app``. HTTP offers only /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from nats.aio.client import Client

from contracts.events import TestRequested
from mailwarden_mailnet.resolve import Resolver
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.service_tokens import service_token
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.keys import load_keyring
from mailwarden_runtime.service import ServiceRuntime
from tester_svc.config import Settings
from tester_svc.fake import FakeSuccessRunner
from tester_svc.handlers import TestRequestedHandler
from tester_svc.jobgate import JobGate
from tester_svc.kv import SharedKv
from tester_svc.orgview import OrgPorts
from tester_svc.runner import Runner

NAME = "tester-svc"
DURABLE = "tester-svc"

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    settings = settings or Settings()
    keyring = load_keyring(settings.transit_keys, "MW_TRANSIT_KEYS", "transit", settings.dev_mode)
    runtime = ServiceRuntime(NAME, settings, uses_database=False)

    def connection() -> Client | None:
        with contextlib.suppress(Exception):  # not connected yet
            return runtime.bus.connection
        return None

    shared = None
    if settings.tester_shared_limits:
        shared = SharedKv(
            connection,
            replicas=settings.stream_replicas,
            breaker_window_s=settings.tester_breaker_window_s,
            timeout_s=settings.tester_kv_timeout_s,
        )
    runner = Runner(settings, keyring, tester=runtime.instance, resolver=resolver, shared=shared)

    async def drain() -> None:
        runner.drain()  # tests still waiting for a connection slot go back at once

    runtime.on_stopping(drain)

    who = bearer_header(service_token(keyring, NAME))  # a service asking a service (auth.service_tokens)

    async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
        reply = await runtime.bus.connection.request(subject, body, timeout=timeout_s, headers=who)
        return bytes(reply.data)

    org = OrgPorts(ask)  # the org's allowed ports: events, else profile-svc; never the request's
    runner.allowed_ports = org.allowed
    handler = TestRequestedHandler(runner, runtime.publish, NAME, JobGate(ask), org)
    if settings.tester_fake_success_for_benchmarks:
        if not settings.dev_mode:
            raise RuntimeError(
                "MW_TESTER_FAKE_SUCCESS_FOR_BENCHMARKS needs MW_DEV_MODE=true (benchmarks only)"
            )
        handler = TestRequestedHandler(FakeSuccessRunner(runtime.instance), runtime.publish, NAME)

        async def warn() -> None:
            log.warning("FAKE TESTER: every test succeeds without connecting (benchmarks only)")

        runtime.on_startup(warn)
    runtime.consume(
        TestRequested,
        DURABLE,
        handler,
        ConsumerOptions(
            # Tests run under the connection limits (2 x concurrency in all, the host's own
            # maximum per host); the extra workers only wait for a busy host's slot.
            max_workers=settings.tester_concurrency + settings.tester_max_waiting,
            batch_size=settings.tester_batch_size,
            ack_wait_s=settings.tester_ack_wait_s,
        ),
    )
    app = runtime.http_app(title="mailwarden tester-svc")
    app.state.runner = runner
    app.state.org_ports = org
    _org_view_lifespan(app, runtime, org)
    if shared is not None:
        _shared_limits_lifespan(app, shared, runner)
    return app


def _org_view_lifespan(app: FastAPI, runtime: ServiceRuntime, org: OrgPorts) -> None:
    """Follow the settings once connected (before the first test can arrive, the consumer waits)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a):
            await org.start(runtime.bus.connection)
            try:
                yield
            finally:
                await org.stop()

    app.router.lifespan_context = lifespan


def _shared_limits_lifespan(app: FastAPI, shared: SharedKv, runner: Runner) -> None:
    """Create the KV buckets once connected, so a misconfiguration shows at start, and start the
    breaker bucket's watch; at the end (after the tests drained) stop it and any lease renewal left.

    Tests that arrive first open them lazily; a failure here is logged, not fatal: the limits
    fall back to this process's until KV answers.
    """
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(application):
                await shared.open_at_start()
                if runner.breaker_view is not None:
                    runner.breaker_view.start()
                yield
        finally:
            if runner.breaker_view is not None:
                await runner.breaker_view.stop()
            if runner.leases is not None:
                await runner.leases.close()

    app.router.lifespan_context = lifespan
