"""Consumers against a real nats-server: dead letters, bounded retries, slow handlers kept alive."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import DeadLettered, Envelope, MailboxApproved
from mailwarden_runtime import metrics
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.consumer import ConsumerOptions, Redeliver
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import NatsServer, eventually


@pytest.fixture
async def runtime_factory(tmp_path: Path) -> AsyncIterator[Callable[..., ServiceRuntime]]:
    """A fresh nats-server per test, so no consumer or stream state leaks between tests."""
    server = NatsServer(tmp_path / "nats").start()
    runtimes: list[ServiceRuntime] = []

    def make(shutdown_grace_s: float = 20.0) -> ServiceRuntime:
        settings = ServiceSettings(nats_url=server.url, log_setup=False, shutdown_grace_s=shutdown_grace_s)
        rt = ServiceRuntime("test-svc", settings, uses_database=False)
        runtimes.append(rt)
        return rt

    yield make
    for rt in runtimes:
        await rt.stop()
    server.stop()


def approved(n: int = 1) -> MailboxApproved:
    return MailboxApproved(mailbox_id=f"mbx_{n}", email="a@example.org", approved_at=datetime.now(UTC))


def collector() -> tuple[list[Envelope[DeadLettered]], Callable[[Envelope[DeadLettered]], Awaitable[None]]]:
    got: list[Envelope[DeadLettered]] = []

    async def handle(env: Envelope[DeadLettered]) -> None:
        got.append(env)

    return got, handle


async def test_invalid_messages_are_dead_lettered_once_and_valid_ones_processed(
    runtime_factory: Callable[[], ServiceRuntime],
) -> None:
    rt = runtime_factory()
    handled: list[str] = []

    async def handle(env: Envelope[MailboxApproved]) -> None:
        handled.append(env.data.mailbox_id)

    rt.consume(MailboxApproved, "c-approved", handle, ConsumerOptions(ack_wait_s=2))
    dead, on_dead = collector()
    rt.consume(DeadLettered, "c-dlq", on_dead, subject="mailwarden.dlq.c-approved")
    await rt.start()
    bad = [
        b"\xff",
        b'{"type":"MailboxApproved","schema_version":1}',
        b'{"type":"MailboxApproved","schema_version":9}',
        b"x" * 1_000_000,
    ]
    for n, body in enumerate(bad):
        await rt.bus.connection.jetstream().publish("mailwarden.mailbox.approved", body, stream="MW_CONFIG")
        await rt.publish(rt.envelope(approved(n)))
    await eventually(lambda: len(dead) == len(bad) and len(handled) == len(bad))
    await asyncio.sleep(3)  # longer than ack_wait: nothing may come back
    assert sorted(handled) == [f"mbx_{n}" for n in range(len(bad))]
    assert len(dead) == len(bad)
    reasons = {d.data.reason for d in dead}
    assert {"body is not UTF-8", "invalid event", "unknown schema version"} <= reasons
    big = next(d.data for d in dead if d.data.body_size == 1_000_000)
    assert big.truncated


async def test_failing_handler_is_retried_then_dead_lettered(
    runtime_factory: Callable[[], ServiceRuntime],
) -> None:
    rt = runtime_factory()
    attempts: list[float] = []

    async def always_fails(env: Envelope[MailboxApproved]) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("database down")

    options = ConsumerOptions(max_deliver=3, retry_delays_s=(0.2, 0.4), ack_wait_s=5)
    rt.consume(MailboxApproved, "c-fails", always_fails, options)
    dead, on_dead = collector()
    rt.consume(DeadLettered, "c-dlq2", on_dead, subject="mailwarden.dlq.c-fails")
    await rt.start()
    await rt.publish(rt.envelope(approved()))
    await eventually(lambda: len(dead) == 1)
    await asyncio.sleep(1)
    assert len(attempts) == 3
    assert dead[0].data.deliveries == 3 and "RuntimeError" in dead[0].data.reason


async def test_slow_handler_keeps_its_message(runtime_factory: Callable[[], ServiceRuntime]) -> None:
    rt = runtime_factory()
    calls: list[str] = []

    async def slow(env: Envelope[MailboxApproved]) -> None:
        calls.append(env.data.mailbox_id)
        await asyncio.sleep(3.5)  # well past ack_wait

    rt.consume(MailboxApproved, "c-slow", slow, ConsumerOptions(ack_wait_s=1.0, max_workers=2))
    await rt.start()
    await rt.publish(rt.envelope(approved()))
    await eventually(lambda: len(calls) == 1)
    await asyncio.sleep(5)
    assert calls == ["mbx_1"], "the message was redelivered while its handler was still working"


async def test_republished_event_is_dropped_by_the_server(
    runtime_factory: Callable[[], ServiceRuntime],
) -> None:
    rt = runtime_factory()
    await rt.start()
    env = rt.envelope(approved(), correlation_id=str(uuid.uuid4()))
    first = await rt.publish(env)
    second = await rt.publish(env)
    assert not first.duplicate and second.duplicate and second.seq == first.seq


async def test_stop_lets_a_handler_finish_within_the_grace_period(
    runtime_factory: Callable[..., ServiceRuntime],
) -> None:
    rt = runtime_factory(shutdown_grace_s=10.0)
    done: list[str] = []

    async def handle(env: Envelope[MailboxApproved]) -> None:
        await asyncio.sleep(1.0)
        done.append(env.data.mailbox_id)

    rt.consume(MailboxApproved, "c-drain", handle)
    await rt.start()
    await rt.publish(rt.envelope(approved()))
    await eventually(
        lambda: rt._consumers[0]._workers is not None and rt._consumers[0]._workers.in_flight == 1
    )
    await rt.stop()
    assert done == ["mbx_1"]
    nc = await nats.connect(rt.settings.nats_url)
    try:
        info = await nc.jetstream().consumer_info("MW_CONFIG", "c-drain")
    finally:
        await nc.close()
    assert (info.num_pending, info.num_ack_pending) == (0, 0), "the finished message was not acked"


async def test_stop_gives_back_what_outlives_the_grace_period(
    runtime_factory: Callable[..., ServiceRuntime],
) -> None:
    """Cut short at shutdown: nak'd, so another process takes it at once, not after the ack wait."""
    stopping = runtime_factory(shutdown_grace_s=0.3)
    outcomes: list[str] = []

    async def stuck(env: Envelope[MailboxApproved]) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise

    options = ConsumerOptions(ack_wait_s=30.0)
    stopping.consume(MailboxApproved, "c-handback", stuck, options)
    await stopping.start()
    await stopping.publish(stopping.envelope(approved()))
    await eventually(
        lambda: stopping._consumers[0]._workers is not None and stopping._consumers[0]._workers.in_flight == 1
    )
    await stopping.stop()
    assert outcomes == ["cancelled"]

    taker = runtime_factory()
    taken: list[str] = []

    async def quick(env: Envelope[MailboxApproved]) -> None:
        taken.append(env.data.mailbox_id)

    taker.consume(MailboxApproved, "c-handback", quick, options)
    await taker.start()
    await eventually(lambda: taken == ["mbx_1"], timeout=10.0)  # the ack wait is 30 s


async def test_batches_are_handled_together_and_a_failed_batch_one_by_one(
    runtime_factory: Callable[..., ServiceRuntime],
) -> None:
    rt = runtime_factory()
    failed: list[str] = []
    batches: list[list[str]] = []
    singles: list[str] = []

    async def batch(envs: Sequence[Envelope[MailboxApproved]]) -> None:
        if not failed:
            failed.extend(e.data.mailbox_id for e in envs)
            raise RuntimeError("the database said no")
        batches.append([e.data.mailbox_id for e in envs])

    async def single(env: Envelope[MailboxApproved]) -> None:
        singles.append(env.data.mailbox_id)

    rt.consume(MailboxApproved, "c-batch", single, ConsumerOptions(batch_size=10), batch_handler=batch)
    dead, on_dead = collector()
    rt.consume(DeadLettered, "c-batch-dlq", on_dead, subject="mailwarden.dlq.c-batch")
    await rt.start()
    for n in range(8):
        await rt.publish(rt.envelope(approved(n)))
        if n == 3:
            await rt.bus.connection.jetstream().publish(
                "mailwarden.mailbox.approved", b"{not json", stream="MW_CONFIG"
            )
    await eventually(lambda: len(singles) + sum(len(b) for b in batches) == 8 and len(dead) == 1)
    await asyncio.sleep(0.5)
    handled = singles + [m for b in batches for m in b]
    assert sorted(handled) == [f"mbx_{n}" for n in range(8)], "each event handled exactly once"
    assert singles == failed, "the failed batch is handled one by one, in order"
    assert "JSON" in dead[0].data.reason


async def test_redeliver_hands_the_message_back_at_once_without_a_failure(
    runtime_factory: Callable[..., ServiceRuntime],
) -> None:
    """Redeliver: nak'd with no delay (taken again long before the 30 s ack wait), no error, no dead letter."""
    rt = runtime_factory()
    deliveries: list[int] = []

    async def not_yet(env: Envelope[MailboxApproved]) -> None:
        deliveries.append(len(deliveries) + 1)
        if len(deliveries) < 4:
            raise Redeliver("not started")

    options = ConsumerOptions(max_deliver=4, ack_wait_s=30.0, retry_delays_s=(30.0,))
    rt.consume(MailboxApproved, "c-redeliver", not_yet, options)
    dead, on_dead = collector()
    rt.consume(DeadLettered, "c-redeliver-dlq", on_dead, subject="mailwarden.dlq.c-redeliver")
    errors_before = metrics.HANDLER_ERRORS.labels(consumer="c-redeliver")._value.get()
    await rt.start()
    await rt.publish(rt.envelope(approved()))
    # A failure would wait its 30 s retry delay, a lost message the 30 s ack wait.
    await eventually(lambda: len(deliveries) == 4, timeout=10.0)
    await asyncio.sleep(0.5)
    assert deliveries == [1, 2, 3, 4] and dead == []
    assert metrics.HANDLER_ERRORS.labels(consumer="c-redeliver")._value.get() == errors_before
    info = await rt.bus.connection.jetstream().consumer_info("MW_CONFIG", "c-redeliver")
    assert (info.num_pending, info.num_ack_pending) == (0, 0), "the handled message was not acked"


async def test_changed_settings_reach_the_stored_consumer_and_fixed_ones_are_kept_with_a_warning(
    runtime_factory: Callable[..., ServiceRuntime], caplog: pytest.LogCaptureFixture
) -> None:
    async def handle(env: Envelope[MailboxApproved]) -> None:
        pass

    first = runtime_factory()
    first.consume(MailboxApproved, "c-config", handle, ConsumerOptions(ack_wait_s=30, max_deliver=8))
    await first.start()
    await first.stop()

    second = runtime_factory()
    changed = ConsumerOptions(ack_wait_s=12, max_deliver=4, max_ack_pending=50)
    second.consume(MailboxApproved, "c-config", handle, changed)
    # A consumer stored with a setting JetStream cannot change (the deliver policy): kept, with a warning.
    nc = await nats.connect(second.settings.nats_url)
    try:
        await ensure_streams(nc, second.settings)
        await nc.jetstream().add_consumer(
            "MW_CONFIG",
            ConsumerConfig(
                name="c-fixed",
                durable_name="c-fixed",
                filter_subject="mailwarden.mailbox.approved",
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW,
            ),
        )
    finally:
        await nc.close()
    handled: list[str] = []

    async def fixed(env: Envelope[MailboxApproved]) -> None:
        handled.append(env.data.mailbox_id)

    second.consume(MailboxApproved, "c-fixed", fixed)
    with caplog.at_level(logging.WARNING, logger="mailwarden_runtime.pull"):
        await second.start()
    info = await second.bus.connection.jetstream().consumer_info("MW_CONFIG", "c-config")
    assert (info.config.ack_wait, info.config.max_deliver, info.config.max_ack_pending) == (12, 6, 50)
    assert any("cannot change" in r.getMessage() for r in caplog.records), "no warning for c-fixed"
    await second.publish(second.envelope(approved(7)))
    await eventually(lambda: handled == ["mbx_7"])  # the kept consumer is used


async def test_a_message_settled_already_does_not_cost_the_rest_of_a_batch(
    runtime_factory: Callable[..., ServiceRuntime],
) -> None:
    """Its ack fails, its keep-alive fails (the message was settled): the others are still handled."""
    rt = runtime_factory()
    handled: list[str] = []

    async def batch(envs: Sequence[Envelope[MailboxApproved]]) -> None:
        raise RuntimeError("one by one, please")

    async def single(env: Envelope[MailboxApproved]) -> None:
        await asyncio.sleep(0.5)  # the keep-alive beats (every 0.2 s) on a message acked already
        handled.append(env.data.mailbox_id)

    consumer = rt.consume(
        MailboxApproved, "c-settled", single, ConsumerOptions(ack_wait_s=0.6), batch_handler=batch
    )
    await rt.start()
    await consumer.stop(0)  # the test fetches and hands the batch over itself
    for n in range(3):
        await rt.publish(rt.envelope(approved(n)))
    sub = await rt.bus.connection.jetstream().pull_subscribe_bind("c-settled", stream="MW_CONFIG")
    msgs = await sub.fetch(3, timeout=5)
    assert len(msgs) == 3
    await msgs[0].ack()  # settled before its handler ran (e.g. by a handler of an older version)
    await consumer.on_batch(msgs)
    assert handled == ["mbx_0", "mbx_1", "mbx_2"]
