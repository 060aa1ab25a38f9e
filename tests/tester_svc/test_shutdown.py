"""Stopping a tester: tests still waiting for a connection slot go back at once, running ones finish."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from fastapi import FastAPI
from nats.aio.msg import Msg

from contracts.envelope import make_envelope, parse_envelope
from contracts.events import TestCompleted
from contracts.models import Endpoint, TlsMode
from contracts.models import TestStatus as Status
from contracts.subjects import TEST_COMPLETED, TEST_REQUESTED
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_servers import NatsServer, TestCertificates, eventually
from tester_svc.app import create_app
from tester_svc.errors import Draining
from tester_svc.limits import ConnectionLimiter
from tester_svc.runner import Runner

from . import fakes
from .conftest import NAMES, StartFake, announce_ports, make_request, settings_for


async def test_no_permit_leaks_whatever_drain_and_cancel_interleave() -> None:
    """Many random interleavings of grants, drains and outer cancels: every permit comes back."""
    rng = random.Random(1234)
    outcomes: Counter[str] = Counter()
    for _ in range(300):
        outcomes.update(await _one_round(rng))
    assert outcomes["ran"] and outcomes["given back"] and outcomes["cancelled"], outcomes


@dataclass
class _Holders:
    now: int = 0
    peak: int = 0


async def _hold(limiter: ConnectionLimiter, per_host: int, ticks: int, holders: _Holders) -> str:
    try:
        async with limiter.slot("Mail.Test", per_host):
            holders.now += 1
            holders.peak = max(holders.peak, holders.now)
            try:
                for _ in range(ticks):
                    await asyncio.sleep(0)
            finally:
                holders.now -= 1
    except Draining:
        return "given back"
    return "ran"


async def _one_round(rng: random.Random) -> list[str]:
    global_limit, per_host = rng.choice([(1, 2), (2, 1), (3, 2), (4, 1)])
    limiter = ConnectionLimiter(global_limit)
    holders = _Holders()
    tasks = [
        asyncio.create_task(_hold(limiter, per_host, rng.randrange(4), holders))
        for _ in range(rng.randrange(2, 8))
    ]
    host_semaphores = set()
    drained = False
    for _ in range(rng.randrange(1, 12)):
        if "mail.test" in limiter._hosts:
            host_semaphores.add(limiter._hosts["mail.test"].semaphore)
        action = rng.random()
        if action < 0.25:
            rng.choice(tasks).cancel()
        elif action < 0.4 and not drained:
            limiter.drain()  # in the same tick as whatever a release just granted
            drained = True
        await asyncio.sleep(0)
    if not drained:
        limiter.drain()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)  # done-callbacks of abandoned waits run here
    assert holders.peak <= min(per_host, global_limit)
    assert limiter._global._value == global_limit, "a global permit leaked"
    assert limiter._hosts == {}, "a host entry outlived its users"
    for semaphore in host_semaphores:
        assert semaphore._value == per_host, "a host permit leaked"
    with pytest.raises(Draining):  # after the drain nothing is granted
        async with limiter.slot("mail.test", per_host):
            pass
    return ["cancelled" if isinstance(r, asyncio.CancelledError) else str(r) for r in results]


async def test_a_test_holding_its_slot_is_not_affected_by_the_drain() -> None:
    limiter = ConnectionLimiter(4)
    async with limiter.slot("mail.test", 1):
        limiter.drain()
        waiting = asyncio.create_task(_take(limiter))
        with pytest.raises(Draining):
            await waiting
    assert limiter._global._value == 4 and limiter._hosts == {}


async def _take(limiter: ConnectionLimiter) -> None:
    async with limiter.slot("mail.test", 1):
        pass


async def test_runner_lets_draining_through_and_gives_up_both_directions(
    make_runner: Callable[..., Runner], fake_server: StartFake
) -> None:
    """A given-back test is no result: run() raises instead of reporting INTERNAL_ERROR."""
    runner = make_runner()
    fake = await fake_server(fakes.imap(delay_s=0.2))
    incoming = Endpoint(host="mail.test", port=fake.port, tls=TlsMode.NONE)
    first = make_request(incoming=incoming, allow_plaintext_auth=True, max_concurrent_connections=1)
    second = make_request(
        incoming=incoming, allow_plaintext_auth=True, max_concurrent_connections=1, test_id="t2"
    )
    running = asyncio.create_task(runner.run(first))
    await eventually(lambda: fake.active == 1, timeout=5)
    queued = asyncio.create_task(runner.run(second))
    await eventually(lambda: sum(e.users for e in runner.env.limiter._hosts.values()) == 2, timeout=5)
    runner.drain()
    with pytest.raises(Draining):
        await queued
    done = await running
    assert done.incoming is not None and done.incoming.status is Status.SUCCESS
    assert fake.connections == 1


@pytest.mark.integration
async def test_stopping_gives_waiting_tests_back_at_once(
    tmp_path: Path, certs: TestCertificates, fake_server: StartFake
) -> None:
    """Per-host limit 1, 3 tests for one slow host: on stop the 2 waiting ones go to another tester.

    Before the change the stopping tester ran all three within its 20 s grace. Redelivery by the
    ack wait (30 s) could not come within the 15 s this waits: the nak gave them back.
    """
    fake = await fake_server(fakes.imap(delay_s=0.25))  # about 1.5 s per test
    server = NatsServer(tmp_path / "nats").start()
    nc = await nats.connect(server.url)
    results: list[TestCompleted] = []

    async def on_completed(msg: Msg) -> None:
        results.append(parse_envelope(msg.data, TestCompleted).data)

    def app_for(name: str) -> FastAPI:
        settings = settings_for(
            certs,
            nats_url=server.url,
            instance=name,
            tester_concurrency=4,
            tester_ack_wait_s=30.0,
            tester_test_timeout_s=20.0,
            shutdown_grace_s=20.0,
        )
        return create_app(settings, resolver=StaticResolver(NAMES))

    await announce_ports(settings_for(certs, nats_url=server.url))
    stopping, taker = app_for("tester-a"), app_for("tester-b")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, server.stop)
        stack.push_async_callback(nc.close)
        await nc.subscribe(TEST_COMPLETED, cb=on_completed)
        stopping_life = stopping.router.lifespan_context(stopping)
        await stopping_life.__aenter__()
        runner: Runner = stopping.state.runner
        ids = {f"stop{n}-{uuid.uuid4().hex[:6]}" for n in range(3)}
        for test_id in ids:
            req = make_request(
                incoming=Endpoint(host="mail.test", port=fake.port, tls=TlsMode.NONE),
                allow_plaintext_auth=True,
                max_concurrent_connections=1,
                test_id=test_id,
            )
            env = make_envelope(req, "pytest")
            await nc.jetstream().publish(TEST_REQUESTED, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
        # One test connected, two waiting for the host's one slot.
        await eventually(
            lambda: fake.active == 1 and sum(e.users for e in runner.env.limiter._hosts.values()) == 3,
            timeout=10,
        )
        await stack.enter_async_context(taker.router.lifespan_context(taker))
        stop = asyncio.create_task(stopping_life.__aexit__(None, None, None))
        try:
            await eventually(lambda: sum(r.tester == "tester-b" for r in results) == 2, timeout=15)
        finally:
            await stop
    by_tester = Counter(r.tester for r in results)
    assert by_tester == {"tester-a": 1, "tester-b": 2}, "the stopping tester published a given-back test"
    assert {r.test_id for r in results} == ids
    assert all(r.incoming is not None and r.incoming.status is Status.SUCCESS for r in results)
    assert fake.peak == 1, "the per-host limit held across both testers"
