"""What a tester's breaker check costs: a KV read per check, or the watched copy of the bucket.

    .venv/bin/python -m bench.breaker_check [--checks 4000] [--in-flight 100] [--rounds 3]

Starts a private nats-server (JetStream), opens tester-svc's buckets as a tester does, and runs
``--checks`` breaker checks of distinct (host, user) pairs with no record (what nearly every test
of a bulk job finds), ``--in-flight`` at once, first reading KV per check (no view), then through
the watched copy (``tester_svc.breakerview``). Prints, per mode and round, this process's CPU
and nats-server's CPU per check (psutil) and the checks per second. A test makes two checks (one
per direction).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import nats
import psutil

from mailwarden_servers import NatsServer, eventually
from tester_svc.breakerview import BreakerView
from tester_svc.kv import BREAKER_BUCKET, KeyHasher, SharedKv
from tester_svc.limits import AuthBreaker, LoginBreaker
from tester_svc.shared_limits import BreakerStore


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _round(breaker: LoginBreaker, checks: int, in_flight: int, offset: int) -> float:
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with gate:
            is_open, ticket = await breaker.check("mail.test", f"user{offset + i}", "pw")
            assert not is_open and ticket.scope == "shared"

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(checks)))
    return time.perf_counter() - started


async def _measure(url: str, server: psutil.Process, watched: bool, args: argparse.Namespace) -> None:
    nc = await nats.connect(url)
    shared = SharedKv(lambda: nc, replicas=1, breaker_window_s=900, timeout_s=2.0)
    await shared.ensure()
    view = BreakerView(lambda: nc, BREAKER_BUCKET, open_bucket=shared.reopen) if watched else None
    if view is not None:
        view.start()
        await eventually(lambda: view.current, "the breaker bucket watched", timeout=10)
    store = BreakerStore(shared, KeyHasher(b"k" * 32), 3, 900, view=view)
    breaker = LoginBreaker(AuthBreaker(3, 900), store)
    me = psutil.Process()
    for r in range(args.rounds):
        c_me, c_nats = _cpu(me), _cpu(server)
        wall = await _round(breaker, args.checks, args.in_flight, r * args.checks)
        own = 1000 * (_cpu(me) - c_me) / args.checks
        bus = 1000 * (_cpu(server) - c_nats) / args.checks
        mode = "watched copy" if watched else "KV read"
        print(
            f"{mode:13} round {r + 1}: tester {own:.3f} ms + nats {bus:.3f} ms of CPU per check,"
            f" {args.checks / wall:,.0f} checks/s"
        )
    if view is not None:
        await view.stop()
    await nc.close()


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="breaker-check-") as tmp:
        server = NatsServer(tmp).start()
        try:
            assert server.pid is not None
            proc = psutil.Process(server.pid)
            for watched in (False, True):
                await _measure(server.url, proc, watched, args)
        finally:
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checks", type=int, default=4000)
    p.add_argument("--in-flight", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
