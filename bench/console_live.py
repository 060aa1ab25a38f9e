"""How fast the console's live notices reach open pages: NATS → console → server-sent events.

Starts a private nats-server and the console (uvicorn, its own process, as deployed), opens ``--pages`` event
streams as signed-in browsers would (``GET /events`` with a sealed session cookie), publishes
``--alerts`` AlertRaised-shaped messages on ``mailwarden.alerts.user.<id>.error`` at ``--rate`` per
second, and prints, per number of open pages, the latency from publish to the notice arriving on
every stream (p50, p95, max) and how many notices arrived. It measures the console's fan-out, not
a browser's rendering (the page then re-reads the changed region through the service's API).

Run: ``.venv/bin/python -m bench.console_live [--pages 1,20,100] [--alerts 200] [--rate 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats

from mailwarden_console.session import COOKIE, Session, SessionCodec
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import NatsServer
from mailwarden_servers.ports import free_port


async def _stream(
    url: str, cookie: str, sent: dict[str, float], got: list[float], ready: asyncio.Event
) -> None:
    async with httpx.AsyncClient(timeout=None, cookies={COOKIE: cookie}) as client:
        async with client.stream("GET", f"{url}/events") as resp:
            ready.set()
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    alert_id = json.loads(line[6:]).get("alert_id", "")
                    if alert_id in sent:
                        got.append(time.perf_counter() - sent[alert_id])


async def _round(url: str, nats_url: str, cookie: str, pages: int, alerts: int, rate: float) -> None:
    sent: dict[str, float] = {}
    got: list[float] = []
    readies = [asyncio.Event() for _ in range(pages)]
    tasks = [asyncio.create_task(_stream(url, cookie, sent, got, r)) for r in readies]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    await asyncio.sleep(0.5)  # every stream subscribed to the hub
    nc = await nats.connect(nats_url)
    start = time.perf_counter()
    for i in range(alerts):
        alert_id = f"a{pages}-{i}"
        body = {"data": {"alert_id": alert_id, "recipient": {"kind": "user", "id": "u1"}, "mailbox_id": "m1"}}
        sent[alert_id] = time.perf_counter()
        await nc.publish("mailwarden.alerts.user.u1.error", json.dumps(body).encode())
        await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.perf_counter()))
    await nc.flush()
    await asyncio.sleep(max(1.0, min(10.0, pages * alerts / 2000)))  # the last notices in flight
    await nc.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ms = sorted(x * 1000 for x in got)
    p95 = ms[int(0.95 * (len(ms) - 1))] if ms else float("nan")
    print(
        f"  pages {pages:>4}  notices {len(got):>6}/{pages * alerts:<6}  "
        f"p50 {statistics.median(ms) if ms else float('nan'):6.2f} ms  p95 {p95:6.2f} ms  "
        f"max {ms[-1] if ms else float('nan'):7.2f} ms",
        flush=True,
    )


async def _ready(url: str) -> None:
    """The console answers /readyz 200 (connected to NATS) within 30 s."""
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the console did not become ready")


async def main(pages: list[int], alerts: int, rate: float) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="mw-console-bench-") as tmp,
        NatsServer(Path(tmp) / "nats") as server,
    ):
        ring_text = KeyRing.generate_key_text("bench")
        port = free_port()
        env = {**os.environ, "MW_NATS_URL": server.url, "MW_CONSOLE_SESSION_KEYS": ring_text,
               "MW_CONSOLE_COOKIE_SECURE": "false", "MW_HTTP_PORT": str(port)}  # fmt: skip
        console = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uvicorn", "--factory", "mailwarden_console.app:create_app",
            "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "1",
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        await _ready(url)
        # An administrator's session: every notice is theirs to see (a role filter drops none).
        admin = {"subject": "bench", "permissions": {"alerts:read": "all", "mailboxes:read": "all"}}
        session = Session.start("bench-token-0000", identity=admin)
        cookie = SessionCodec(KeyRing.parse(ring_text), 3600).seal(session)
        print(f"console live notices: {alerts} alerts at {rate:.0f}/s, NATS → console → SSE")
        try:
            for n in pages:
                await _round(url, server.url, cookie, n, alerts, rate)
        finally:
            console.terminate()
            await console.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", default="1,20,100", help="open pages per round, comma-separated")
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="alerts per second")
    args = parser.parse_args()
    asyncio.run(main([int(p) for p in args.pages.split(",")], args.alerts, args.rate))
