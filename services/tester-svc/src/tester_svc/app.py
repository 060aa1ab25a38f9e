"""tester-svc: consumes TestRequested, probes the servers, publishes TestCompleted. No database.

Run: ``uvicorn --factory tester_svc.app:create_app``. HTTP offers only /healthz, /readyz, /metrics.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from contracts.events import TestRequested
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.keys import load_keyring
from mailwarden_runtime.service import ServiceRuntime
from tester_svc.config import Settings
from tester_svc.fake import FakeSuccessRunner
from tester_svc.handlers import TestRequestedHandler
from tester_svc.resolve import Resolver
from tester_svc.runner import Runner

NAME = "tester-svc"
DURABLE = "tester-svc"

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    settings = settings or Settings()
    keyring = load_keyring(settings.transit_keys, "MW_TRANSIT_KEYS", "transit", settings.dev_mode)
    runtime = ServiceRuntime(NAME, settings, uses_database=False)
    runner = Runner(settings, keyring, tester=runtime.instance, resolver=resolver)
    handler = TestRequestedHandler(runner, runtime.publish, NAME)
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
            max_workers=settings.tester_concurrency,
            batch_size=settings.tester_batch_size,
            ack_wait_s=settings.tester_ack_wait_s,
        ),
    )
    app = runtime.http_app(title="mailwarden tester-svc")
    app.state.runner = runner
    return app
