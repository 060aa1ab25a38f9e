"""Delivery and durability under faults (reliability.md §7 A1, A3, A4, A9).

Each scenario runs a bulk Test & Enable job (one profile, N approved mailboxes, real Dovecot IMAPS
and SMTP STARTTLS with the test CA) through the real services, injects its fault, waits for the
job to finish and audits the services' own data: every mailbox tested once, one status change,
one alert, nothing left in an outbox or a consumer.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from chaos.harness import Figure, MailTarget, System, private_nats
from chaos.infra import MAIL_USER, Infra, direct_target
from mailwarden_servers import eventually


async def _prepare(
    system: System,
    infra: Infra,
    n: int,
    target: MailTarget | None = None,
    advanced: dict[str, object] | None = None,
) -> tuple[str, list[str]]:
    tag = uuid.uuid4().hex[:6]
    target = target or direct_target(infra)
    await system.allow_ports([target.imaps_port, target.smtp_port])
    profile_id = await system.create_profile(target, tag, advanced)
    ids = await system.create_mailboxes(profile_id, n, tag, *MAIL_USER)
    return profile_id, ids


async def _backlog(system: System, fig: Figure, tests: int) -> None:
    """Every consumer drained; alert-svc, the slowest (one status event at a time), may lag a while."""
    t0 = time.monotonic()
    left = await system.wait_quiet(60 + tests / 2)
    fig.figures["drain_after_last_test_s"] = round(time.monotonic() - t0, 1)
    busy = {k: v for k, v in left.items() if v != (0, 0)}
    fig.figures["consumers_with_backlog"] = len(busy)
    fig.check(not busy, f"consumers not drained (pending, unacked): {busy}")


async def kill_testers(
    infra: Infra, workdir: Path, *, tests: int, kills: int, testers: int, target: MailTarget
) -> Figure:
    """A1: SIGKILL a tester process ``kills`` times while ``testers`` of them work through a job.

    ``target`` should be behind latency proxies, so that testers (not the database) are the
    bottleneck and every kill catches tests in flight.
    """
    fig = Figure("A1 kill -9 tester")
    # A killed tester's host leases live until the test deadline (+ margin): keep it short.
    env = {
        "MW_TESTER_ACK_WAIT_S": "3",
        "MW_TESTER_CONCURRENCY": "4",
        "MW_TESTER_BATCH_SIZE": "4",
        "MW_TESTER_TEST_TIMEOUT_S": "8",
    }
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(
            workdir,
            nats_server.url,
            infra.mongo_uri,
            infra.certs,
            in_process=("profile-svc", "mailbox-svc", "alert-svc"),
            tester_processes=testers,
            env=env,
        ) as system,
    ):
        # A killed tester's host slots stay leased until its deadline: with the default of 10
        # per host, a few kills would starve the host and turn queued tests into timeouts.
        profile_id, ids = await _prepare(system, infra, tests, target, {"max_concurrent_connections": 40})
        started = time.monotonic()
        await system.start_job(profile_id)
        done_kills = 0
        restarts: dict[str, asyncio.Task[object]] = {}
        for k in range(kills):
            threshold = tests * (k + 1) // (kills + 1)

            async def busy(threshold: int = threshold) -> bool:
                """The testers have taken ``threshold`` requests and hold some unfinished."""
                info = await system.nc.jetstream().consumer_info("MW_TESTS", "tester-svc")
                return bool(info.delivered.stream_seq >= threshold and info.num_ack_pending >= 2)

            await eventually(busy, f"{threshold} requests taken, some in flight", 120 + tests / 5)
            name = f"tester-{k % testers}"
            if name in restarts:
                await restarts.pop(name)  # killed before: wait until it is back
            victim = system.procs[name]
            victim.kill()  # SIGKILL: no drain, no ack, no goodbye
            done_kills += 1
            print(f"  killed {name} at {time.monotonic() - started:.1f}s", flush=True)
            restarts[name] = asyncio.create_task(asyncio.to_thread(victim.start))
        for task in restarts.values():
            await task
        await system.wait_tested(profile_id, tests, 120 + tests / 5)
        fig.figures["tests"] = tests
        fig.figures["testers"] = testers
        fig.figures["kills"] = done_kills
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        await _backlog(system, fig, tests)
        redelivered = await system.redeliveries("tester-svc", "MW_TESTS", "mailwarden.test.requested")
        fig.figures["redelivered_requests"] = redelivered
        await system.delivery_audit(fig, profile_id, ids)
        fig.check(done_kills == kills, f"only {done_kills} kills happened")
        fig.check(redelivered > 0, "no kill hit a test in flight: the scenario proved nothing")
    return fig


async def _in_flight(system: System, at_least: int) -> bool:
    info = await system.nc.jetstream().consumer_info("MW_TESTS", "tester-svc")
    return bool(info.num_ack_pending >= at_least)


async def nats_restarts(infra: Infra, workdir: Path, *, tests: int) -> Figure:
    """A3: nats-server SIGTERM, SIGTERM, SIGKILL (file storage, fsync before ack) during a job."""
    fig = Figure("A3 nats-server restarts")
    env = {"MW_TESTER_ACK_WAIT_S": "5"}
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(workdir, nats_server.url, infra.mongo_uri, infra.certs, env=env) as system,
    ):
        profile_id, ids = await _prepare(system, infra, tests)
        started = time.monotonic()
        await system.start_job(profile_id)
        faults = ("SIGTERM", "SIGTERM", "SIGKILL")
        for k, fault in enumerate(faults):
            threshold = tests * (k + 1) // (len(faults) + 1)

            async def reached(threshold: int = threshold) -> bool:
                return await system.tested_count(profile_id) >= threshold

            await eventually(reached, f"{threshold} tests done", 120 + tests / 5)
            if fault == "SIGKILL":
                await asyncio.to_thread(nats_server.kill)
            else:
                await asyncio.to_thread(nats_server.stop)
            await asyncio.sleep(1.0)  # the services notice, reconnect attempts fail for a while
            await asyncio.to_thread(nats_server.start)
        await system.wait_tested(profile_id, tests, 180 + tests / 5)
        fig.figures["tests"] = tests
        fig.figures["restarts"] = "+".join(faults)
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        streams = await system.nc.jetstream().streams_info()
        file_backed = all(
            str(getattr(s.config.storage, "value", s.config.storage)) == "file" for s in streams
        )
        fig.check(file_backed, "a stream is not file-backed")
        js_config: dict[str, object] = nats_server.monitor("varz")["jetstream"]["config"]  # type: ignore[index]
        fig.figures["sync_always"] = js_config.get("sync_always")
        fig.check(js_config.get("sync_always") is True, "nats-server does not fsync before the ack")
        await _backlog(system, fig, tests)
        await system.delivery_audit(fig, profile_id, ids)
    return fig


async def database_outage(
    infra: Infra, workdir: Path, *, tests: int, outage_s: float, job_batch: int | None = None
) -> Figure:
    """A4: the MongoDB-wire server is stopped for ``outage_s`` during a job, then started again.

    ``job_batch`` (mailboxes a job requests at once) small enough that the job is still expanding
    when the database goes: it must go on expanding after the outage (the full size does that).
    """
    fig = Figure("A4 database outage")
    mongo = infra.mongo
    assert mongo is not None, "the outage scenario needs a database server of its own"
    env = {"MW_TESTER_ACK_WAIT_S": "5"}
    if job_batch is not None:
        env["MW_JOB_BATCH_SIZE"] = str(job_batch)
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(workdir, nats_server.url, infra.mongo_uri, infra.certs, env=env) as system,
    ):
        profile_id, ids = await _prepare(system, infra, tests)
        started = time.monotonic()
        await system.start_job(profile_id)

        async def a_third() -> bool:
            return await system.tested_count(profile_id) >= tests // 3

        await eventually(a_third, "a third of the tests", 120 + tests / 5)
        before = await system.tested_count(profile_id)
        killed_at = datetime.now(UTC)
        await asyncio.to_thread(mongo.kill)
        await asyncio.sleep(outage_s)
        await asyncio.to_thread(mongo.start)
        back_at = datetime.now(UTC)
        await system.wait_tested(profile_id, tests, 180 + tests / 5)
        fig.figures["tests"] = tests
        fig.figures["outage_s"] = outage_s
        fig.figures["done_before_outage"] = before
        fig.figures["seconds"] = round(time.monotonic() - started, 1)
        await _backlog(system, fig, tests)
        await system.delivery_audit(fig, profile_id, ids)
        # No event for a write that failed: every status change on the bus matches the stored state.
        stored = {
            d["_id"]: (d["incoming_status"], d["outgoing_status"])
            async for d in system.db("mailbox-svc").mailboxes.find(
                {"profile_id": profile_id}, {"incoming_status": 1, "outgoing_status": 1}
            )
        }
        # How soon the relay published status events made before the outage and after it (those
        # made during it waited for their write: the outage is their delay, not the relay's).
        lags = await system.publish_lags("MW_CONFIG", "mailwarden.mailbox.status_changed")
        before_s = max((lag for at, lag in lags if at < killed_at), default=0.0)
        after_s = max((lag for at, lag in lags if at >= back_at), default=0.0)
        fig.figures["status_published_within_s"] = f"{before_s:.1f} before, {after_s:.1f} after"
        events = await _status_events(system)
        orphans = sum(1 for mid, st in events.items() if stored.get(mid) != st)
        fig.figures["events_without_state"] = orphans
        fig.check(orphans == 0, f"{orphans} status events disagree with the stored state")
    return fig


async def _status_events(system: System) -> dict[str, tuple[str, str]]:
    import json

    out: dict[str, tuple[str, str]] = {}
    for _, body in await system.stream_messages("MW_CONFIG", "mailwarden.mailbox.status_changed"):
        d = json.loads(body)["data"]
        out[d["mailbox"]["mailbox_id"]] = (d["incoming_status"], d["outgoing_status"])
    return out


async def sigterm_in_flight(
    infra: Infra, workdir: Path, *, tests: int, target: MailTarget, grace_s: float
) -> Figure:
    """A9: SIGTERM every service while ``tests`` slow tests are in flight; restart; nothing lost.

    ``target`` is behind latency proxies in front of Dovecot and SMTP, so each test takes seconds.
    """
    fig = Figure("A9 SIGTERM in flight")
    env = {"MW_TESTER_ACK_WAIT_S": "10", "MW_TESTER_CONCURRENCY": str(max(tests, 16))}
    names = ("profile-svc", "mailbox-svc", "tester-svc", "alert-svc")
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(
            workdir, nats_server.url, infra.mongo_uri, infra.certs, in_process=(), processes=names, env=env
        ) as system,
    ):
        profile_id, ids = await _prepare(system, infra, tests, target, {"max_concurrent_connections": 40})
        resp = await system.http("mailbox-svc").post("/mailboxes/test", json={"mailbox_ids": ids})
        assert resp.status_code == 202, resp.text

        async def all_taken() -> bool:
            info = await system.nc.jetstream().consumer_info("MW_TESTS", "tester-svc")
            return bool(info.delivered.stream_seq >= tests)

        await eventually(all_taken, f"{tests} requests taken by the tester", 60)
        await asyncio.sleep(0.5)
        info = await system.nc.jetstream().consumer_info("MW_TESTS", "tester-svc")
        fig.figures["in_flight_at_sigterm"] = info.num_ack_pending
        exits: dict[str, float] = {}

        def stop(name: str) -> None:
            proc = system.procs[name]
            t0 = time.monotonic()
            proc.signal(signal.SIGTERM)
            try:
                assert proc._proc is not None
                proc._proc.wait(grace_s + 30)
            except Exception:
                proc.kill()
            exits[name] = time.monotonic() - t0
            proc.stop()

        await asyncio.gather(*(asyncio.to_thread(stop, n) for n in names))
        fig.figures["tests"] = tests
        fig.figures["exit_s"] = {n: round(s, 1) for n, s in exits.items()}
        slow = [n for n, s in exits.items() if s > grace_s]
        fig.check(not slow, f"exceeded the {grace_s:.0f}s grace period: {slow}")
        await asyncio.gather(*(asyncio.to_thread(system.procs[n].start) for n in names))
        await system.wait_tested(profile_id, tests, 120)
        await _backlog(system, fig, tests)
        redelivered = await system.redeliveries("tester-svc", "MW_TESTS", "mailwarden.test.requested")
        fig.figures["redelivered_requests"] = redelivered
        await system.delivery_audit(fig, profile_id, ids)
    return fig
