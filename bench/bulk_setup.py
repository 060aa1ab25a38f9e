"""Bulk set-up through the public API: mailboxes created approved, in mailboxes per second.

The system as the end-to-end rows run it (`bench.system`: nats-server, SecantusDB, profile-svc,
mailbox-svc, alert-svc; no tester, nothing is tested), one profile, then N mailboxes through
``mailbox-svc.create_many`` with ``approve: true`` over NATS request-reply, ``--batch`` per call,
``--callers`` calls in flight. Two rates:

- **calls**: N / the time inside the ``create_many`` calls (what the end-to-end set-up reports as
  ``setup_create_approve_per_s``): the mailboxes are stored, approved, with their events;
- **settled**: N / (first call → the bus quiet: every event published by the relay and consumed
  by every service that follows it), the rate an operator can keep up.

``--py-spy DIR`` runs py-spy (100 Hz) on mailbox-svc and SecantusDB over the whole run and writes
their collapsed stacks there. Run it through ``/work/wt/bin/bench`` when the figure counts:

    .venv/bin/python -m bench.bulk_setup --mailboxes 2000 --batch 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from nats.aio.client import Client

from bench.docwrites import DocumentWrites
from bench.mailboxes import DOMAIN
from bench.system import MailwardenSystem, bench_profile, bus_quiet, connect, rpc

PORTS = [993, 587]


def _items(start: int, n: int, profile_id: str) -> list[dict[str, Any]]:
    return [
        {
            "mailbox_id": f"u{i:06d}",
            "email": f"u{i:06d}@{DOMAIN}",
            "owner": {"kind": "user", "id": f"u{i:06d}", "name": f"u{i:06d}", "email": f"u{i:06d}@{DOMAIN}"},
            "profile_id": profile_id,
            "credentials": {"username": f"u{i:06d}", "password": f"pw-{i:06d}-bench"},
        }
        for i in range(start, start + n)
    ]


async def _consumers_caught_up(nc: Client, t0: float, timeout_s: float = 540.0) -> dict[str, float]:
    """Seconds from ``t0`` until each durable consumer had nothing pending (or unacked) any more,
    and until each stream last grew (the relays' last publish)."""
    js = nc.jetstream()
    last_busy: dict[str, float] = {}
    seqs: dict[str, int] = {}
    while time.perf_counter() - t0 < timeout_s:
        busy = False
        for stream in await js.streams_info():
            name = f"stream {stream.config.name}"
            if seqs.get(name, stream.state.last_seq) != stream.state.last_seq:
                last_busy[name] = time.perf_counter() - t0  # the relays still publishing into it
                busy = True
            seqs[name] = stream.state.last_seq
            for info in await js.consumers_info(stream.config.name or ""):
                now = time.perf_counter() - t0
                name = f"consumer {info.name}"
                if (info.num_pending or 0) > 0 or (info.num_ack_pending or 0) > 0:
                    busy = True
                    last_busy[name] = now
                else:
                    last_busy.setdefault(name, 0.0)
        if not busy:
            break
        await asyncio.sleep(0.1)
    return {k: round(v, 2) for k, v in sorted(last_busy.items(), key=lambda kv: -kv[1]) if v > 0}


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (100 Hz, collapsed stacks) on one process until SIGINT."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    cmd = [py_spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        out[name] = total
    return out


async def _run(
    system: MailwardenSystem, n: int, batch: int, callers: int, docs: DocumentWrites | None
) -> dict[str, Any]:
    nc = await connect(system.nats.url)
    try:
        profile_id = await bench_profile(nc, "bench", "127.0.0.1", (993, 587), PORTS)
        starts = list(range(1, n + 1, batch))
        queue: asyncio.Queue[int] = asyncio.Queue()
        for s in starts:
            queue.put_nowait(s)
        inside: list[float] = []

        async def caller() -> None:
            while not queue.empty():
                s = queue.get_nowait()
                items = _items(s, min(batch, n + 1 - s), profile_id)
                t0 = time.perf_counter()
                result = await rpc(nc, "mailbox-svc", "create_many", {"mailboxes": items, "approve": True})
                inside.append(time.perf_counter() - t0)
                if result.get("refused") or len(result.get("done", [])) != len(items):
                    raise RuntimeError(f"creation refused: {result.get('refused', [])[:3]}")

        cpu0 = _cpu(system.process_groups())
        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        calls_s = time.perf_counter() - t0
        cpu1 = _cpu(system.process_groups())
        caught_up = await _consumers_caught_up(nc, t0)
        await bus_quiet(nc, settle_s=0.25)
        settled_s = time.perf_counter() - t0
        cpu2 = _cpu(system.process_groups())
        return {
            "mailboxes": n,
            "batch": batch,
            "callers": callers,
            "calls_s": round(calls_s, 2),
            "calls_per_s": round(n / calls_s, 1),
            "call_s_p50": round(sorted(inside)[len(inside) // 2], 3),
            "settled_s": round(settled_s, 2),
            "settled_per_s": round(n / settled_s, 1),
            "caught_up_s": caught_up,
            "docs_written": {} if docs is None else docs.breakdown(),
            "cpu_ms_per_mailbox_calls": {k: round((cpu1[k] - cpu0[k]) * 1000 / n, 3) for k in cpu0},
            "cpu_ms_per_mailbox_settled": {k: round((cpu2[k] - cpu0[k]) * 1000 / n, 3) for k in cpu0},
        }
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mailboxes", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=1000, help="mailboxes per create_many call (API max 1,000)")
    ap.add_argument("--callers", type=int, default=1, help="create_many calls in flight")
    ap.add_argument(
        "--py-spy", type=Path, default=None, help="py-spy mailbox-svc and SecantusDB, output here"
    )
    ap.add_argument(
        "--docs", action="store_true", help="count documents written per collection (one more change stream)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mw-bulk-setup-") as tmp:
        system = MailwardenSystem(Path(tmp) / "system", ca_file="")
        with system:
            spies: list[subprocess.Popen[bytes]] = []
            if args.py_spy is not None:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                groups = system.process_groups()
                for name in ("mailbox-svc", "mongo"):
                    spies.append(_spy(groups[name][0], args.py_spy / f"{name}.txt"))
                time.sleep(1.0)
            try:
                with contextlib.ExitStack() as stack:
                    docs = stack.enter_context(DocumentWrites(system.mongo.uri)) if args.docs else None
                    if docs is not None:
                        stack.callback(docs.close)
                    figures = asyncio.run(_run(system, args.mailboxes, args.batch, args.callers, docs))
            finally:
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
    print(
        f"bulk set-up: {figures['mailboxes']} mailboxes created approved, {figures['batch']} per call, "
        f"{figures['callers']} caller(s): calls {figures['calls_s']} s = {figures['calls_per_s']} mailboxes/s "
        f"(p50 call {figures['call_s_p50']} s); bus settled after {figures['settled_s']} s = "
        f"{figures['settled_per_s']} mailboxes/s"
    )
    for name in figures["cpu_ms_per_mailbox_settled"]:
        print(
            f"  CPU ms/mailbox {name:12s} calls {figures['cpu_ms_per_mailbox_calls'][name]:7.3f}"
            f"  settled {figures['cpu_ms_per_mailbox_settled'][name]:7.3f}"
        )
    for name, at in figures["caught_up_s"].items():
        print(f"  {name:49s} done at {at:6.2f} s")
    for ns, count in figures["docs_written"].items():
        print(f"  {ns:49s} {count / figures['mailboxes']:6.2f} documents per mailbox")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
