"""Stopping when a dependency is gone (issue #17): SIGTERM must end every service within its budget.

S1 kills nats-server, S2 kills the database, S3 makes NATS a silent peer (connections stay open,
nothing answers), each while tests are in flight; then every service process gets SIGTERM and
the time to its exit is measured. The budget is what Kubernetes allows after its 5 s preStop sleep
(40 s grace): uvicorn's wait for open requests (10 s) plus ``MW_SHUTDOWN_TIMEOUT_S`` (20 s). Before
the bounded stop, mailbox-svc was seen to exit 46 s after SIGTERM, or never.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Literal

from chaos.delivery import _prepare
from chaos.harness import Figure, MailTarget, System, private_nats
from chaos.infra import Infra
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import MongoWireServer, SilencingProxy, eventually
from mailwarden_servers.devstack import UVICORN_GRACEFUL_S

Fault = Literal["nats killed", "database killed", "nats silent"]
NAMES = ("profile-svc", "mailbox-svc", "tester-svc", "alert-svc")
STOP_BUDGET_S = UVICORN_GRACEFUL_S + float(ServiceSettings.model_fields["shutdown_timeout_s"].default)
KILL_AFTER_S = 90.0  # how long we wait before SIGKILL: far past the budget, to measure a miss


async def stop_with_fault(
    infra: Infra, workdir: Path, *, fault: Fault, tests: int, target: MailTarget
) -> Figure:
    """SIGTERM the four service processes once ``fault`` happened with ``tests`` tests in flight."""
    fig = Figure(f"SIGTERM with {fault}")
    mongo = MongoWireServer(workdir / "mongo")
    await asyncio.to_thread(mongo.start)
    try:
        async with private_nats(workdir / "nats") as nats_server:
            proxy = await SilencingProxy(nats_server.port).start()
            env = {
                "MW_NATS_URL": proxy.url,  # the services reach NATS through the proxy, we do not
                "MW_TESTER_ACK_WAIT_S": "10",
                "MW_TESTER_CONCURRENCY": str(max(tests, 16)),
            }
            try:
                async with System(
                    workdir, nats_server.url, mongo.uri, infra.certs, in_process=(), processes=NAMES, env=env
                ) as system:
                    await _in_flight(system, infra, tests, target, fig)
                    if fault == "nats killed":
                        await asyncio.to_thread(nats_server.kill)
                    elif fault == "database killed":
                        await asyncio.to_thread(mongo.kill)
                    else:
                        proxy.go_silent()
                    await asyncio.sleep(1.0)  # let the fault land before the signal, as in production
                    exits = await _sigterm_all(system)
                    fig.figures["exit_s"] = exits
                    fig.figures["budget_s"] = STOP_BUDGET_S
                    slow = {n: s for n, s in exits.items() if s > STOP_BUDGET_S}
                    fig.check(not slow, f"exited after the {STOP_BUDGET_S:.0f} s budget: {slow}")
                    # Bring the dependency back so the harness itself can close its connections.
                    if fault == "nats killed":
                        await asyncio.to_thread(nats_server.start)
                    elif fault == "database killed":
                        await asyncio.to_thread(mongo.start)
            finally:
                await proxy.close()
    finally:
        await asyncio.to_thread(mongo.stop)
    return fig


async def _in_flight(system: System, infra: Infra, tests: int, target: MailTarget, fig: Figure) -> None:
    _, ids = await _prepare(system, infra, tests, target, {"max_concurrent_connections": 40})
    resp = await system.http("mailbox-svc").post("/mailboxes/test", json={"mailbox_ids": ids})
    assert resp.status_code == 202, resp.text

    async def taken() -> bool:
        info = await system.nc.jetstream().consumer_info("MW_TESTS", "tester-svc")
        return bool(info.num_ack_pending >= min(tests, 8))

    await eventually(taken, "tests in flight at the tester", 60)
    info = await system.nc.jetstream().consumer_info("MW_TESTS", "tester-svc")
    fig.figures["in_flight_at_fault"] = info.num_ack_pending


async def _sigterm_all(system: System) -> dict[str, float]:
    exits: dict[str, float] = {}

    def stop(name: str) -> None:
        proc = system.procs[name]
        assert proc._proc is not None
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        try:
            proc._proc.wait(KILL_AFTER_S)
        except Exception:
            proc.kill()
        exits[name] = round(time.monotonic() - t0, 1)
        proc.stop()

    await asyncio.gather(*(asyncio.to_thread(stop, n) for n in system.procs))
    return dict(sorted(exits.items()))
