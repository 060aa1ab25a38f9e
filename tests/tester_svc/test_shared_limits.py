"""The per-host limit and the auth-failure breaker hold across tester processes (JetStream KV).

Two tester apps run in-process on one private nats-server, each with its own runner, local
semaphores and KV client: what one tester does to a customer server, the other must see.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import nats
import pytest
from fastapi import FastAPI
from nats.js.api import StorageType
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from contracts.errors import ErrorCode
from contracts.models import DirectionResult, Endpoint, TlsMode
from contracts.models import TestStatus as Status
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_servers import NatsServer, TestCertificates, eventually
from tester_svc import kv as kv_module
from tester_svc.app import create_app
from tester_svc.errors import Draining
from tester_svc.kv import BREAKER_BUCKET, HOSTS_BUCKET, KeyHasher, SharedKv
from tester_svc.limits import AuthBreaker, ConnectionLimiter, LoginBreaker
from tester_svc.runner import Runner
from tester_svc.shared_limits import BreakerStore, FailureRecord, HostLeases, Lease

from .conftest import NAMES, Behaviour, FakeServer, StartFake, announce_ports, make_request, settings_for

pytestmark = pytest.mark.integration

GOOD = "good-pw"


@pytest.fixture
async def testers(private_nats: NatsServer, certs: TestCertificates) -> AsyncIterator[Callable[..., Any]]:
    """``await start(**settings)`` → a running tester app; all are stopped at the end."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> FastAPI:
            values: dict[str, Any] = {"nats_url": private_nats.url, "tester_concurrency": 4}
            values.update(overrides)
            settings = settings_for(certs, **values)
            await announce_ports(settings)
            app = create_app(settings, resolver=StaticResolver(NAMES))
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


def breaker_store(runner: Runner) -> BreakerStore:
    store = runner.env.breaker.store
    assert store is not None
    return store


async def failure_seen_by(app: FastAPI, user: str = "alice", host: str = "mail.test") -> None:
    """Wait until another tester's failure is in this tester's watched copy of the breaker bucket
    (a delivery away: the copy is not a read at the moment of the check)."""
    runner = runner_of(app)
    key = breaker_store(runner).key(host, user)
    view = runner.breaker_view
    assert view is not None

    def seen() -> bool:
        value = view.lookup(key)
        return value is not None and bool(value[1])

    await eventually(seen, "the failure in the other tester's watched copy", timeout=10)


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


async def test_a_drain_ends_the_wait_for_a_lease_held_by_another_tester(
    testers: Any, fake_server: StartFake
) -> None:
    """The stopping tester gives its waiting test back; the other tester's test goes on."""
    fake = await fake_server(checking_imap(delay_s=0.3))  # ~1.5 s per session
    a, b = await testers(instance="tester-a"), await testers(instance="tester-b")
    holding = asyncio.create_task(imap(runner_of(a), fake.port, max_concurrent_connections=1))
    await eventually(lambda: fake.active == 1, timeout=5)
    waiting = asyncio.create_task(imap(runner_of(b), fake.port, max_concurrent_connections=1))
    hosts = runner_of(b).env.limiter._hosts
    # Past its local gate (the semaphore taken): polling the shared lease.
    await eventually(lambda: bool(hosts) and all(e.semaphore.locked() for e in hosts.values()), timeout=5)
    runner_of(b).drain()
    with pytest.raises(Draining):
        await waiting
    assert runner_of(b).env.limiter._hosts == {}
    assert (await holding).status is Status.SUCCESS
    assert fake.connections == 1


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


# --- lease renewal ------------------------------------------------------------------------------
TTL_S = 1.0  # short leases, so these tests take seconds; production default 15 s


@pytest.fixture
async def two_kvs(private_nats: NatsServer) -> AsyncIterator[tuple[SharedKv, SharedKv]]:
    """Two testers' KV clients, each on its own NATS connection."""
    a, b = await nats.connect(private_nats.url), await nats.connect(private_nats.url)
    try:
        yield (
            SharedKv(lambda: a, replicas=1, breaker_window_s=60, timeout_s=2.0),
            SharedKv(lambda: b, replicas=1, breaker_window_s=60, timeout_s=2.0),
        )
    finally:
        await a.close()
        await b.close()


def renewal_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("host-lease-renewal")]


async def test_a_held_lease_outlives_its_ttl_because_it_is_renewed(
    two_kvs: tuple[SharedKv, SharedKv],
) -> None:
    hasher = KeyHasher(b"k" * 32)
    holder, other = HostLeases(two_kvs[0], hasher, TTL_S), HostLeases(two_kvs[1], hasher, TTL_S)
    try:
        lease = await holder.try_acquire("mail.test", 1, "long-test")
        assert lease is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + 3.5 * TTL_S
        tries = 0
        while loop.time() < until:  # the test runs on; the other tester keeps asking
            assert await other.try_acquire("mail.test", 1, f"other-{tries}") is None
            tries += 1
            await asyncio.sleep(TTL_S / 4)
        assert tries >= 10
        _, raw = await two_kvs[1].read(HOSTS_BUCKET, lease.key)
        assert b"long-test" in raw
        await holder.release(lease)
        assert holder.renewing == 0
        assert await other.try_acquire("mail.test", 1, "after-release") is not None
    finally:
        await holder.close()
        await other.close()


async def test_a_dead_testers_slot_is_taken_over_within_the_ttl(testers: Any, fake_server: StartFake) -> None:
    """Tester A dies holding the host's only slot (it stops renewing, never releases); tester B's
    test for that host waits for the slot inside its own deadline and succeeds."""
    fake = await fake_server(checking_imap())
    fast = {"tester_lease_ttl_s": TTL_S, "tester_kv_timeout_s": 0.3, "tester_test_timeout_s": 8.0}
    a = await testers(instance="tester-a", **fast)
    b = await testers(instance="tester-b", **fast)
    dead = runner_of(a).leases
    assert dead is not None
    lease = await dead.try_acquire("mail.test", 1, "killed-mid-test")
    assert lease is not None
    await dead.close()  # the process is gone: no renewal, no release
    result = await imap(runner_of(b), fake.port, max_concurrent_connections=1)
    assert result.status is Status.SUCCESS, result.error
    assert step_fact(result, "tcp", "limits") == "shared"
    waited_ms = step_fact(result, "tcp", "slot_wait_ms")
    assert isinstance(waited_ms, float) and waited_ms > 0  # it did wait for the dead lease
    # Generous bound (the old lease lasted the 8 s test deadline + 15 s): TTL plus a margin.
    assert waited_ms < (TTL_S + 4.0) * 1000


async def test_a_renewal_that_finds_its_slot_taken_stops_and_warns(
    two_kvs: tuple[SharedKv, SharedKv], caplog: pytest.LogCaptureFixture
) -> None:
    hasher = KeyHasher(b"k" * 32)
    holder = HostLeases(two_kvs[0], hasher, TTL_S)
    try:
        lease = await holder.try_acquire("mail.test", 1, "stalled")
        assert lease is not None
        # As if the lease had expired and another tester took the slot before the renewal came.
        revision, _ = await two_kvs[1].read(HOSTS_BUCKET, lease.key)
        taken = b'{"id":"usurper","until":1e12}'
        await two_kvs[1].write(HOSTS_BUCKET, lease.key, taken, revision)
        with caplog.at_level("WARNING", logger="tester_svc.shared_limits"):
            for _ in range(50):
                if holder.renewing == 0:
                    break
                await asyncio.sleep(0.05)
        assert holder.renewing == 0
        assert any("renewal stops" in r.getMessage() for r in caplog.records)
        await holder.release(lease)  # must not free the other tester's lease
        assert (await two_kvs[1].read(HOSTS_BUCKET, lease.key))[1] == taken
    finally:
        await holder.close()


async def test_many_acquisitions_and_cancels_leave_no_renewal_running(
    two_kvs: tuple[SharedKv, SharedKv],
) -> None:
    leases = HostLeases(two_kvs[0], KeyHasher(b"k" * 32), TTL_S)
    limiter = ConnectionLimiter(8, leases)
    before = len(renewal_tasks())

    async def use(i: int) -> None:
        async with limiter.slot(f"host-{i % 3}.test", 2):
            await asyncio.sleep(0.01 * (i % 4))

    try:
        for _ in range(3):
            tasks = [asyncio.create_task(use(i)) for i in range(30)]
            await asyncio.sleep(0.05)
            for task in tasks[::4]:  # cancelled while holding or while waiting for a slot
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Releases of cancelled tests finish in the background (a KV write each): wait for them.
            deadline = asyncio.get_running_loop().time() + 15
            while limiter._background or leases._held or len(renewal_tasks()) != before:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.02)
            assert leases.renewing == 0 and not leases._held
            assert len(renewal_tasks()) == before
        for host in ("host-0.test", "host-1.test", "host-2.test"):  # every slot free again
            for slot in range(2):
                _, raw = await two_kvs[1].read(HOSTS_BUCKET, f"{leases.key(host)}.{slot}")
                assert raw in (b"", b"{}")
    finally:
        await leases.close()
    assert len(renewal_tasks()) == before


def count_writes(kv: SharedKv) -> list[str]:
    """The keys ``kv`` writes from now on, in order."""
    written: list[str] = []
    write = kv.write

    async def counted(bucket: str, key: str, value: bytes, revision: int) -> int:
        written.append(key)
        return await write(bucket, key, value, revision)

    kv.write = counted  # type: ignore[method-assign]
    return written


async def test_a_released_lease_kept_idle_is_reused_without_a_kv_write(
    two_kvs: tuple[SharedKv, SharedKv],
) -> None:
    leases = HostLeases(two_kvs[0], KeyHasher(b"k" * 32), TTL_S, keep_idle_s=30)
    written = count_writes(two_kvs[0])
    try:
        first = await leases.try_acquire("mail.test", 4, "a")
        assert first is not None and written == [first.key]
        await leases.release(first)
        again = await leases.try_acquire("mail.test", 4, "b")
        assert again == first  # the same lease, still held and renewed
        assert written == [first.key]
        other_host = await leases.try_acquire("other.test", 4, "c")  # idle leases are per host
        assert other_host is not None and other_host.key != first.key
        await leases.release(again)
        await leases.release(other_host)
        assert leases.renewing == 2
    finally:
        await leases.close()
    assert leases.renewing == 0
    for key in (first.key, other_host.key):  # closing frees what was idle at once
        assert (await two_kvs[1].read(HOSTS_BUCKET, key))[1] == b"{}"


async def test_an_idle_lease_counts_against_the_limit_until_it_is_freed(
    two_kvs: tuple[SharedKv, SharedKv],
) -> None:
    hasher = KeyHasher(b"k" * 32)
    holder = HostLeases(two_kvs[0], hasher, TTL_S, keep_idle_s=0.2)
    other = HostLeases(two_kvs[1], hasher, TTL_S)
    try:
        lease = await holder.try_acquire("mail.test", 1, "a")
        assert lease is not None
        await holder.release(lease)
        # Idle here until keep_idle_s passes, then written free: the other tester gets the slot.
        taken = await eventually(lambda: other.try_acquire("mail.test", 1, "b"), "the idle slot freed", 10)
        assert taken.slot == lease.slot
        assert holder.renewing == 0 and not holder._held
        await other.release(taken)
    finally:
        await holder.close()
        await other.close()


async def test_an_idle_lease_above_a_lowered_limit_is_freed_not_reused(
    two_kvs: tuple[SharedKv, SharedKv],
) -> None:
    leases = HostLeases(two_kvs[0], KeyHasher(b"k" * 32), TTL_S, keep_idle_s=30)
    try:
        held = [await leases.try_acquire("mail.test", 2, f"l{i}") for i in range(2)]
        assert all(held) and {h.slot for h in held if h} == {0, 1}
        for h in sorted((h for h in held if h is not None), key=lambda h: h.slot):
            await leases.release(h)  # slot 1 last: the next use looks at it first
        again = await leases.try_acquire("mail.test", 1, "low")
        assert again is not None and again.slot == 0
        high = next(h for h in held if h is not None and h.slot == 1)
        assert (await two_kvs[1].read(HOSTS_BUCKET, high.key))[1] == b"{}"
        assert leases.renewing == 1
        await leases.release(again)
    finally:
        await leases.close()


async def test_a_drain_frees_the_idle_leases_and_keeps_no_more(two_kvs: tuple[SharedKv, SharedKv]) -> None:
    leases = HostLeases(two_kvs[0], KeyHasher(b"k" * 32), TTL_S, keep_idle_s=30)
    limiter = ConnectionLimiter(4, leases)
    try:
        async with limiter.slot("mail.test", 2):
            pass
        assert leases.renewing == 1  # kept idle
        busy = await leases.try_acquire("mail.test", 2, "busy")  # the idle one, in use
        assert busy is not None
        async with limiter.slot("mail.test", 2):
            limiter.drain()
        await leases.release(busy)  # after the drain: freed, not kept
        await eventually(lambda: leases.renewing == 0, "the idle leases freed", 10)
        for slot in range(2):
            _, raw = await two_kvs[1].read(HOSTS_BUCKET, f"{leases.key('mail.test')}.{slot}")
            assert raw == b"{}"
    finally:
        await leases.close()


async def test_a_test_waiting_for_its_process_permit_holds_no_host_slot(
    two_kvs: tuple[SharedKv, SharedKv],
) -> None:
    hasher = KeyHasher(b"k" * 32)
    busy = ConnectionLimiter(1, HostLeases(two_kvs[0], hasher, TTL_S))  # one connection at a time here
    other = ConnectionLimiter(4, HostLeases(two_kvs[1], hasher, TTL_S))
    done = asyncio.Event()

    async def connect(limiter: ConnectionLimiter) -> None:
        async with limiter.slot("mail.test", 2):
            await done.wait()

    first = asyncio.create_task(connect(busy))
    await eventually(lambda: busy._global.locked(), "the busy tester's one permit taken", 10)
    second = asyncio.create_task(connect(busy))  # waits for that permit: 1 connection to the host
    await eventually(
        lambda: bool(busy._global._waiters), "the second test waiting for its process's permit", 10
    )
    try:
        # The host allows 2 and has 1 connection: the other tester's test connects at once.
        async with asyncio.timeout(3), other.slot("mail.test", 2) as info:
            assert info.scope == "shared"
    finally:
        done.set()
        await asyncio.gather(first, second)
        assert busy._leases is not None and other._leases is not None
        await busy._leases.close()
        await other._leases.close()


async def test_a_test_waiting_for_a_full_host_holds_no_permit(two_kvs: tuple[SharedKv, SharedKv]) -> None:
    """Isolation with shared leases: a test for a host that is full at another tester waits for a
    lease without holding this process's permit, so another host's test connects meanwhile."""
    hasher = KeyHasher(b"k" * 32)
    elsewhere = HostLeases(two_kvs[0], hasher, TTL_S)
    leases = HostLeases(two_kvs[1], hasher, TTL_S)
    limiter = ConnectionLimiter(1, leases)  # one permit: held while waiting, it would block the rest
    tries: list[str] = []
    try_acquire = leases.try_acquire

    async def counted(host: str, limit: int, lease_id: str) -> Lease | None:
        tries.append(host)
        return await try_acquire(host, limit, lease_id)

    leases.try_acquire = counted  # type: ignore[method-assign]
    taken = await elsewhere.try_acquire("busy.test", 1, "elsewhere")  # the host's only slot
    assert taken is not None
    got_busy = asyncio.Event()

    async def busy_host() -> None:
        async with limiter.slot("busy.test", 1) as info:
            assert info.scope == "shared"
            got_busy.set()

    waiting = asyncio.create_task(busy_host())
    try:
        await eventually(lambda: tries.count("busy.test") >= 2, "the busy host tried twice", 10)
        async with asyncio.timeout(2), limiter.slot("free.test", 1) as info:
            assert info.scope == "shared"
        assert not got_busy.is_set()
        await elsewhere.release(taken)
        await asyncio.wait_for(waiting, 10)  # the next try after the release gets the slot
        assert limiter._global._value == 1 and limiter._hosts == {}
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await elsewhere.close()
        await leases.close()


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
    await failure_seen_by(b)
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
    await failure_seen_by(b)
    again = await imap(runner_of(b), fake.port, password="wrong-1")
    assert again.error is not None and again.error.code is ErrorCode.AUTH_BREAKER_OPEN
    assert fake.connections == 1
    facts = again.steps[0].facts  # tester B names tester A's failure (shared record) and the resume time
    assert facts["limits"] == "shared" and facts["paused_by"] == "same_password"
    assert str(facts["failed_at"]) < str(facts["resume_at"])
    fixed = await imap(runner_of(b), fake.port)  # a corrected password may try, and clears the record
    assert fixed.status is Status.SUCCESS
    retried = await imap(runner_of(a), fake.port, password="wrong-1")
    assert retried.error is not None and retried.error.code is ErrorCode.AUTH_FAILED  # cleared for all


async def test_a_watched_tester_checks_the_breaker_without_reading_kv(
    testers: Any, fake_server: StartFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nearly every check finds no record: the watched copy answers it; a record there is read from KV."""
    fake = await fake_server(checking_imap())
    runner = runner_of(await testers())
    view = runner.breaker_view
    assert view is not None
    await eventually(lambda: view.current, "the breaker bucket watched", timeout=10)
    kv = breaker_store(runner).kv
    reads: list[str] = []
    read = kv.read

    async def counted(bucket: str, key: str) -> tuple[int, bytes]:
        if bucket == BREAKER_BUCKET:
            reads.append(key)
        return await read(bucket, key)

    monkeypatch.setattr(kv, "read", counted)
    for _ in range(5):
        ok = await imap(runner, fake.port)
        assert ok.status is Status.SUCCESS and step_fact(ok, "credentials", "limits") == "shared"
    assert reads == []
    failed = await imap(runner, fake.port, password="wrong-1")
    assert failed.error is not None and failed.error.code is ErrorCode.AUTH_FAILED
    assert reads == []  # the failure is written against the copy's revision
    again = await imap(runner, fake.port, password="wrong-1")  # its own write is in the copy at once
    assert again.error is not None and again.error.code is ErrorCode.AUTH_BREAKER_OPEN
    assert len(reads) == 1  # a record in the copy: KV decides
    fixed = await imap(runner, fake.port)  # clears the record for everyone
    assert fixed.status is Status.SUCCESS and len(reads) == 2
    after = await imap(runner, fake.port)
    assert after.status is Status.SUCCESS and len(reads) == 2  # cleared in the copy too
    assert fake.connections == 8


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
        assert lost.status is Status.SUCCESS  # under the local limits, or the breaker's copy until
        # its watch notices the loss (within a second)

        async def healed() -> bool:
            test = await imap(runner, fake.port)
            assert test.status is Status.SUCCESS
            return {step_fact(test, "credentials", "limits"), step_fact(test, "tcp", "limits")} == {"shared"}

        view = runner.breaker_view
        assert view is not None
        for bucket in (BREAKER_BUCKET, HOSTS_BUCKET):  # the watch re-creates them, tests need not
            stream = f"KV_{bucket}"
            await eventually(partial(js.stream_info, stream), stream, timeout=15, ignoring=(NotFoundError,))
        await eventually(lambda: view.current, "the breaker bucket watched again", timeout=15)
        await eventually(healed, "tests under the shared limits again", timeout=15)
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


def test_lease_ttl_leaves_room_for_a_renewal(certs: TestCertificates) -> None:
    assert settings_for(certs).tester_lease_ttl_s == 15.0
    with pytest.raises(ValidationError, match="tester_lease_ttl_s"):
        settings_for(certs, tester_lease_ttl_s=2.0, tester_kv_timeout_s=1.0)
