"""One TestRequested → one TestCompleted: both directions concurrently, each under the test deadline.

At shutdown (:meth:`Runner.drain`) a test with a direction still waiting for a connection slot is
given back whole (:class:`~tester_svc.errors.Draining`): its other direction is cancelled, as a
result with one direction missing would say nothing, and no result is published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from contracts.errors import ErrorCode
from contracts.events import TestCompleted, TestRequested
from contracts.models import Direction, DirectionResult, IncomingProtocol, TestError, TestStatus
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.resolve import Resolver, SystemResolver
from mailwarden_mailnet.tls import TlsContexts
from mailwarden_mailnet.wire import Limits
from mailwarden_runtime.crypto import KeyRing
from tester_svc import metrics
from tester_svc.breakerview import BreakerView
from tester_svc.config import Settings
from tester_svc.credentials import open_login
from tester_svc.errors import Draining
from tester_svc.kv import BREAKER_BUCKET, KeyHasher, SharedKv, limits_key
from tester_svc.limits import AuthBreaker, BreakerTicket, ConnectionLimiter, LoginBreaker
from tester_svc.probes.base import Dialogue, ProbeEnv, ProbeTarget, Protocol, Session, run_probe
from tester_svc.probes.imap import imap_dialogue
from tester_svc.probes.pop3 import pop3_dialogue
from tester_svc.probes.smtp import smtp_dialogue
from tester_svc.shared_limits import BreakerStore, HostLeases
from tester_svc.trace import Trace

log = logging.getLogger(__name__)

LEASE_KEEP_IDLE_S = 1.0
"""A host lease released by a test stays this tester's for this long (mailwarden_runtime.hostleases)."""

DIALOGUES: dict[Protocol, Dialogue] = {"imap": imap_dialogue, "pop3": pop3_dialogue, "smtp": smtp_dialogue}


class Runner:
    def __init__(
        self,
        settings: Settings,
        keyring: KeyRing,
        *,
        tester: str,
        resolver: Resolver | None = None,
        shared: SharedKv | None = None,
    ) -> None:
        """``shared``: the KV buckets that make the limits hold across testers (None: this process only)."""
        # the org's allowed ports as this tester sees them (tester_svc.orgview), set by the app;
        # a runner on its own (unit tests) takes the request's
        self.allowed_ports: Callable[[list[int]], list[int]] = list
        self.keyring = keyring
        self.tester = tester
        self.test_timeout_s = settings.tester_test_timeout_s
        threshold, window_s = settings.tester_breaker_threshold, settings.tester_breaker_window_s
        # Opening the login is instant; the shared breaker check is one KV read with its own deadline.
        self.credentials_timeout_s = 1.0 + (shared.timeout_s if shared else 0.0)
        self.leases: HostLeases | None = None
        # The breaker bucket watched into memory: a test's breaker check reads no KV (breakerview).
        self.breaker_view: BreakerView | None = None
        store: BreakerStore | None = None
        if shared is not None:
            hasher = KeyHasher(limits_key(keyring))
            # Short, renewed while the test runs: a killed tester's slots free within one TTL. Kept
            # a moment after use: the next connection to that host takes it without a KV write.
            self.leases = HostLeases(
                shared, hasher, settings.tester_lease_ttl_s, keep_idle_s=LEASE_KEEP_IDLE_S
            )
            self.breaker_view = BreakerView(shared.connection, BREAKER_BUCKET, open_bucket=shared.reopen)
            store = BreakerStore(shared, hasher, threshold, window_s, view=self.breaker_view)
        self.env = ProbeEnv(
            resolver=resolver or SystemResolver(),
            tls=TlsContexts(settings.tester_ca_file),
            allow_networks=settings.allow_networks,
            limiter=ConnectionLimiter(settings.tester_concurrency * 2, self.leases),
            breaker=LoginBreaker(AuthBreaker(threshold, window_s), store),
            step_timeout_s=settings.tester_step_timeout_s,
            dns_timeout_s=settings.tester_dns_timeout_s,
            wire_limits=Limits(settings.tester_max_line_bytes, settings.tester_max_response_bytes),
            ehlo_name=settings.tester_ehlo_name,
        )

    def drain(self) -> None:
        """The process is stopping: tests without a connection slot yet are given back (``Draining``)."""
        self.env.limiter.drain()

    @staticmethod
    def _round_trip(req: TestRequested) -> bool:
        """Send mode with both directions on IMAP: send first, then find and delete the message."""
        return (
            req.smtp_mode == "send"
            and req.target.incoming_protocol is IncomingProtocol.IMAP
            and Direction.INCOMING in req.directions
            and Direction.OUTGOING in req.directions
        )

    def _target(self, req: TestRequested, direction: Direction, find: bool = False) -> ProbeTarget:
        t = req.target
        incoming = direction is Direction.INCOMING
        return ProbeTarget(
            protocol=t.incoming_protocol.value if incoming else "smtp",
            endpoint=t.incoming if incoming else t.outgoing,
            verify_tls=t.verify_tls,
            allow_plaintext_auth=t.allow_plaintext_auth,
            connect_timeout_s=t.connect_timeout_s,
            max_connections=t.max_concurrent_connections,
            allowed_ports=self.allowed_ports(req.allowed_ports),
            mailbox_email=req.mailbox.email,
            smtp_mode=req.smtp_mode,
            marker=f"{req.test_id}-{req.attempt}",
            find_marker=find and incoming,
        )

    async def _credentials(
        self, req: TestRequested, direction: Direction, trace: Trace, host: str
    ) -> tuple[Login, BreakerTicket]:
        async with trace.step("credentials", self.credentials_timeout_s) as facts:
            login = open_login(req, direction, self.keyring)
            trace.secrets = login.secret_forms()
            facts["source"] = req.credential_source.value
            is_open, ticket = await self.env.breaker.check(
                host, login.username, login.password.get_secret_value()
            )
            facts["limits"] = ticket.scope
            if is_open:
                # Lockout protection: say which earlier failure paused this login and until when.
                if ticket.trip is None:
                    raise NetError(
                        ErrorCode.AUTH_BREAKER_OPEN, "recent definite login failures for this user"
                    )
                facts.update(ticket.trip.facts())
                raise NetError(ErrorCode.AUTH_BREAKER_OPEN, ticket.trip.detail())
        return login, ticket

    async def _update_breaker(self, trace: Trace, login: Login | None, ticket: BreakerTicket | None) -> None:
        if login is None or ticket is None:
            return
        for step in trace.steps:
            if step.name != "auth":
                continue
            if step.ok:
                await self.env.breaker.record_success(ticket)
            elif step.error_code is ErrorCode.AUTH_FAILED:
                await self.env.breaker.record_failure(ticket, login.password.get_secret_value())

    async def run_direction(
        self, req: TestRequested, direction: Direction, find: bool = False
    ) -> DirectionResult:
        target = self._target(req, direction, find)
        trace = Trace(target.protocol)
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        error: NetError | None = None
        step: str | None = None
        login: Login | None = None
        ticket: BreakerTicket | None = None
        try:
            async with asyncio.timeout(self.test_timeout_s):
                login, ticket = await self._credentials(req, direction, trace, target.endpoint.host)
                await run_probe(Session(self.env, target, trace, login), DIALOGUES[target.protocol])
        except Draining:
            raise  # not a result: the request goes back to the queue
        except NetError as exc:
            error, step = exc, trace.current
        except TimeoutError:
            error, step = NetError(ErrorCode.TEST_TIMEOUT, "the test ran out of time"), trace.current
        except Exception:
            log.exception("probe crashed", extra={"test_id": req.test_id, "direction": direction.value})
            error, step = NetError(ErrorCode.INTERNAL_ERROR, "tester failure"), trace.current
        await self._update_breaker(trace, login, ticket)
        test_error = None if error is None else TestError.of(error.code, step or "waiting")
        status = TestStatus.FAILURE if error else TestStatus.SUCCESS
        metrics.DIRECTION_RESULTS.labels(
            protocol=target.protocol,
            outcome=status.value,
            error_code=error.code.value if error else "none",
        ).inc()
        return DirectionResult(
            direction=direction,
            protocol=target.protocol,
            status=status,
            error=test_error,
            steps=trace.steps,
            warnings=trace.warnings,
            started_at=started_at,
            duration_ms=round((time.monotonic() - t0) * 1000, 3),
        )

    async def _all_directions(self, req: TestRequested, wanted: list[Direction]) -> list[DirectionResult]:
        """Run the directions concurrently; one given back (``Draining``) cancels the others."""
        tasks = [asyncio.create_task(self.run_direction(req, d)) for d in wanted]
        try:
            return await asyncio.gather(*tasks)
        except Draining:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def run(self, req: TestRequested) -> TestCompleted:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        wanted = [d for d in (Direction.INCOMING, Direction.OUTGOING) if d in req.directions]
        by_dir: dict[Direction, DirectionResult] = {}
        if self._round_trip(req):
            by_dir[Direction.OUTGOING] = sent = await self.run_direction(req, Direction.OUTGOING)
            find = sent.status is TestStatus.SUCCESS
            by_dir[Direction.INCOMING] = await self.run_direction(req, Direction.INCOMING, find)
        else:
            results = await self._all_directions(req, wanted)
            by_dir = dict(zip(wanted, results, strict=True))
        completed = TestCompleted(
            test_id=req.test_id,
            mailbox=req.mailbox,
            attempt=req.attempt,
            job_id=req.job_id,
            requested_at=req.requested_at,
            incoming=by_dir.get(Direction.INCOMING),
            outgoing=by_dir.get(Direction.OUTGOING),
            started_at=started_at,
            finished_at=datetime.now(UTC),
            tester=self.tester,
        )
        metrics.TESTS.labels(outcome="success" if completed.succeeded else "failure").inc()
        metrics.TEST_SECONDS.observe(time.monotonic() - t0)
        return completed
