"""The per-host limit and the auth-failure breaker hold across tester processes (JetStream KV).

Two tester apps run in-process on one private nats-server, each with its own runner, local
semaphores and KV client: what one tester does to a customer server, the other must see.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import nats
import pytest
from fastapi import FastAPI
from nats.js.api import StorageType

from contracts.errors import ErrorCode
from contracts.models import DirectionResult, Endpoint, TlsMode
from contracts.models import TestStatus as Status
from mailwarden_servers import NatsServer, TestCertificates
from tester_svc import kv as kv_module
from tester_svc.app import create_app
from tester_svc.kv import BREAKER_BUCKET, HOSTS_BUCKET, KeyHasher, SharedKv
from tester_svc.limits import AuthBreaker, LoginBreaker
from tester_svc.resolve import StaticResolver
from tester_svc.runner import Runner
from tester_svc.shared_limits import BreakerStore, FailureRecord, HostLeases

from .conftest import NAMES, Behaviour, FakeServer, StartFake, make_request, settings_for

pytestmark = pytest.mark.integration

GOOD = "good-pw"


@pytest.fixture
def private_nats(workdir: Path) -> Iterator[NatsServer]:
    """A fresh server per test: no bucket state carried over from another test."""
    with NatsServer(workdir / f"nats-shared-{uuid.uuid4().hex[:6]}") as server:
        yield server


@pytest.fixture
async def testers(private_nats: NatsServer, certs: TestCertificates) -> AsyncIterator[Callable[..., Any]]:
    """``await start(**settings)`` → a running tester app; all are stopped at the end."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> FastAPI:
            values: dict[str, Any] = {"nats_url": private_nats.url, "tester_concurrency": 4}
            values.update(overrides)
            app = create_app(settings_for(certs, **values), resolver=StaticResolver(NAMES))
            await stack.enter_async_context(app.router.lifespan_context(app))
            return app

        yield start


def runner_of(app: FastAPI) -> Runner:
    runner: Runner = app.state.runner
    return runner


def checking_imap(delay_s: float = 0.0) -> Behaviour:
    """An IMAP server that accepts only ``GOOD`` (SASL PLAIN) and counts what it is sent."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(b"* OK ready\r\n")
        while True:
            line = await fake.read_line(reader)
            await asyncio.sleep(delay_s)
            tag, _, rest = line.strip().partition(b" ")
            words = rest.split(b" ")
            cmd = words[0].upper()
            if cmd == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n" + tag + b" OK done\r\n")
            elif cmd == b"AUTHENTICATE":
                password = base64.b64decode(words[-1]).split(b"\0")[-1]
                ok = password == GOOD.encode()
                writer.write(tag + (b" OK in" if ok else b" NO [AUTHENTICATIONFAILED] no") + b"\r\n")
            elif cmd == b"EXAMINE":
                writer.write(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n" + tag + b" OK [READ-ONLY] ok\r\n")
            elif cmd == b"LOGOUT":
                writer.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" BAD what\r\n")
            await writer.drain()

    return run


async def imap(runner: Runner, port: int, password: str = GOOD, **kw: Any) -> DirectionResult:
    req = make_request(
        incoming=Endpoint(host="mail.test", port=port, tls=TlsMode.NONE),
        allow_plaintext_auth=True,
        password=password,
        test_id=f"t{uuid.uuid4().hex[:8]}",
        **kw,
    )
    done = await runner.run(req)
    assert done.incoming is not None
    return done.incoming


def step_fact(result: DirectionResult, step: str, fact: str) -> object:
    return next(s for s in result.steps if s.name == step).facts.get(fact)


# --- per-host concurrency ---------------------------------------------------------------------
async def test_host_limit_holds_across_two_testers(testers: Any, fake_server: StartFake) -> None:
    fake = await fake_server(checking_imap(delay_s=0.03))
    a, b = await testers(instance="tester-a"), await testers(instance="tester-b")
    # Four tests on each tester; each alone would allow 2 connections, 4 together without sharing.
    results = await asyncio.gather(
        *(imap(runner_of(app), fake.port, max_concurrent_connections=2) for app in (a, b) for _ in range(4))
    )
    assert all(r.status is Status.SUCCESS for r in results), [r.error for r in results]
    assert fake.connections == 8
    assert fake.peak == 2
    assert {step_fact(r, "tcp", "limits") for r in results} == {"shared"}
    assert {step_fact(r, "credentials", "limits") for r in results} == {"shared"}


async def test_waiting_for_a_slot_counts_against_the_test_deadline(
    testers: Any, fake_server: StartFake
) -> None:
    connected = asyncio.Event()
    slow = checking_imap(delay_s=0.4)  # ~2 s per session

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, f: FakeServer) -> None:
        connected.set()
        await slow(reader, writer, f)

    fake = await fake_server(behaviour)
    a = await testers(instance="tester-a")
    b = await testers(instance="tester-b", tester_test_timeout_s=0.8)
    holder = asyncio.create_task(imap(runner_of(a), fake.port, max_concurrent_connections=1))
    await connected.wait()
    waiting = await imap(runner_of(b), fake.port, max_concurrent_connections=1)
    assert waiting.error is not None and waiting.error.code is ErrorCode.TEST_TIMEOUT
    assert waiting.error.step == "waiting"
    assert fake.connections == 1  # tester B never connected
    assert (await holder).status is Status.SUCCESS


async def test_a_killed_testers_lease_frees_at_its_deadline(private_nats: NatsServer) -> None:
    nc = await nats.connect(private_nats.url)
    try:
        now = [1000.0]
        shared = SharedKv(lambda: nc, replicas=1, breaker_window_s=60, timeout_s=2.0)
        hasher = KeyHasher(b"k" * 32)
        killed = HostLeases(shared, hasher, ttl_s=30.0, clock=lambda: now[0])
        alive = HostLeases(shared, hasher, ttl_s=30.0, clock=lambda: now[0])
        # The killed tester took both slots and never released them.
        held = [await killed.try_acquire("mail.test", 2, f"dead-{i}") for i in range(2)]
        assert {lease.slot for lease in held if lease is not None} == {0, 1}
        assert await alive.try_acquire("mail.test", 2, "live-1") is None
        now[0] += 29.0
        assert await alive.try_acquire("mail.test", 2, "live-1") is None
        now[0] += 2.0  # past the deadline
        first = await alive.try_acquire("mail.test", 2, "live-1")
        second = await alive.try_acquire("mail.test", 2, "live-2")
        assert first is not None and second is not None
        assert await alive.try_acquire("mail.test", 2, "live-3") is None  # still 2 at most
        await alive.release(first)
        revision, raw = await shared.read(HOSTS_BUCKET, first.key)
        assert revision > first.revision and raw == b"{}"
        # Its own freed slot is taken back in one write, on the revision it remembers.
        again = await alive.try_acquire("mail.test", 2, "live-4")
        assert again is not None and again.slot == first.slot and again.revision == revision + 1
    finally:
        await killed.close()
        await alive.close()
        await nc.close()


async def test_a_cancel_mid_write_leaves_no_lease(private_nats: NatsServer) -> None:
    nc = await nats.connect(private_nats.url)
    try:
        shared = SharedKv(lambda: nc, replicas=1, breaker_window_s=60, timeout_s=2.0)
        leases = HostLeases(shared, KeyHasher(b"k" * 32), ttl_s=30.0)
        lease = await leases.try_acquire("mail.test", 1, "cut-short")
        assert lease is not None
        leases._writing["cut-short"] = lease.key  # as if the cancel came before the write's answer
        await leases.abandon("cut-short")
        assert await leases.try_acquire("mail.test", 1, "next") is not None
    finally:
        await leases.close()
        await nc.close()


# --- breaker ----------------------------------------------------------------------------------
async def test_breaker_threshold_reached_on_one_tester_stops_the_other(
    testers: Any, fake_server: StartFake
) -> None:
    fake = await fake_server(checking_imap())
    a = await testers(instance="tester-a", tester_breaker_threshold=2)
    b = await testers(instance="tester-b", tester_breaker_threshold=2)
    for pw in ("wrong-1", "wrong-2"):
        failed = await imap(runner_of(a), fake.port, password=pw)
        assert failed.error is not None and failed.error.code is ErrorCode.AUTH_FAILED
    blocked = await imap(runner_of(b), fake.port, password=GOOD)
    assert blocked.error is not None and blocked.error.code is ErrorCode.AUTH_BREAKER_OPEN
    assert [s.name for s in blocked.steps] == ["credentials"]
    assert fake.connections == 2  # tester B did not connect
    other_user = await imap(runner_of(b), fake.port, user="bob")
    assert other_user.status is Status.SUCCESS  # per (host, user), not per host


async def test_a_failed_password_is_not_retried_by_another_tester(
    testers: Any, fake_server: StartFake
) -> None:
    fake = await fake_server(checking_imap())
    a, b = await testers(instance="tester-a"), await testers(instance="tester-b")
    assert (await imap(runner_of(a), fake.port, password="wrong-1")).error is not None
    again = await imap(runner_of(b), fake.port, password="wrong-1")
    assert again.error is not None and again.error.code is ErrorCode.AUTH_BREAKER_OPEN
    assert fake.connections == 1
    fixed = await imap(runner_of(b), fake.port)  # a corrected password may try, and clears the record
    assert fixed.status is Status.SUCCESS
    retried = await imap(runner_of(a), fake.port, password="wrong-1")
    assert retried.error is not None and retried.error.code is ErrorCode.AUTH_FAILED  # cleared for all


async def test_breaker_keys_do_not_reveal_accounts(
    testers: Any, fake_server: StartFake, private_nats: NatsServer
) -> None:
    fake = await fake_server(checking_imap())
    a = await testers()
    await imap(runner_of(a), fake.port, password="wrong-secret", user="alice@corp.example")
    nc = await nats.connect(private_nats.url)
    try:
        js = nc.jetstream()
        keys = await (await js.key_value(BREAKER_BUCKET)).keys()
        host_keys = await (await js.key_value(HOSTS_BUCKET)).keys()
        info = await js.stream_info(f"KV_{BREAKER_BUCKET}")
        stored = await js.get_last_msg(f"KV_{BREAKER_BUCKET}", f"$KV.{BREAKER_BUCKET}.{keys[0]}")
    finally:
        await nc.close()
    assert len(keys) == 1 and len(host_keys) == 1
    for text in (*keys, *host_keys, (stored.data or b"").decode()):
        assert "alice" not in text and "corp" not in text and "mail.test" not in text
        assert "wrong-secret" not in text
    assert info.config.max_age == 900.0  # the breaker window
    assert info.config.storage == StorageType.FILE


# --- KV unavailable -----------------------------------------------------------------------------
async def test_without_kv_tests_run_under_local_limits(
    testers: Any, fake_server: StartFake, private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS gone: the test still runs, under this process's limits, and says so; KV back: shared again."""
    monkeypatch.setattr(kv_module, "RETRY_AFTER_S", 0.0)
    fake = await fake_server(checking_imap())
    app = await testers(tester_kv_timeout_s=0.3)
    runner = runner_of(app)
    private_nats.kill()
    try:
        first = await imap(runner, fake.port, password="wrong-1")
        assert first.error is not None and first.error.code is ErrorCode.AUTH_FAILED
        assert step_fact(first, "credentials", "limits") == "local"
        assert step_fact(first, "tcp", "limits") == "local"
        # The local breaker still refuses the password that definitely failed.
        again = await imap(runner, fake.port, password="wrong-1")
        assert again.error is not None and again.error.code is ErrorCode.AUTH_BREAKER_OPEN
        assert fake.connections == 1
    finally:
        private_nats.start()
    scopes: set[object] = set()
    for _ in range(50):  # the client reconnects within about a second
        back = await imap(runner, fake.port)
        assert back.status is Status.SUCCESS
        scopes = {step_fact(back, "credentials", "limits"), step_fact(back, "tcp", "limits")}
        if scopes == {"shared"}:
            break
        await asyncio.sleep(0.1)
    assert scopes == {"shared"}


async def test_lost_buckets_are_recreated(
    testers: Any, fake_server: StartFake, private_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_module, "RETRY_AFTER_S", 0.0)
    fake = await fake_server(checking_imap())
    runner = runner_of(await testers())
    assert step_fact(await imap(runner, fake.port), "tcp", "limits") == "shared"
    nc = await nats.connect(private_nats.url)
    try:
        js = nc.jetstream()
        await js.delete_key_value(HOSTS_BUCKET)
        await js.delete_key_value(BREAKER_BUCKET)
        lost = await imap(runner, fake.port)
        assert lost.status is Status.SUCCESS
        assert step_fact(lost, "credentials", "limits") == "local"
        healed = await imap(runner, fake.port)
        assert step_fact(healed, "credentials", "limits") == "shared"
        assert step_fact(healed, "tcp", "limits") == "shared"
        assert (await js.stream_info(f"KV_{HOSTS_BUCKET}")).config.max_age == kv_module.HOSTS_TTL_S
    finally:
        await nc.close()


# --- without a server ---------------------------------------------------------------------------
async def test_no_connection_falls_back_to_the_local_breaker() -> None:
    shared = SharedKv(lambda: None, replicas=1, breaker_window_s=60, timeout_s=0.1)
    breaker = LoginBreaker(AuthBreaker(3, 60), BreakerStore(shared, KeyHasher(b"k" * 32), 3, 60))
    is_open, ticket = await breaker.check("mail.test", "alice", "wrong")
    assert not is_open and ticket.scope == "local"
    await breaker.record_failure(ticket, "wrong")
    is_open, ticket = await breaker.check("mail.test", "alice", "wrong")
    assert is_open and ticket.scope == "local"
    assert shared.degraded


def test_failure_record_is_bounded_and_tolerant() -> None:
    assert FailureRecord.decode(7, b"not json").empty
    assert FailureRecord.decode(7, b'{"t": "x"}').empty
    record = FailureRecord.decode(3, b'{"t": [1.0, 50.0, 99.0], "p": {"a": 1.0, "b": 99.0}}')
    pruned = record.pruned(cutoff=40.0)
    assert pruned.revision == 3 and pruned.times == [50.0, 99.0] and pruned.prints == {"b": 99.0}
