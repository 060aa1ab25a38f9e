"""tester-svc on its own: N TestRequested straight onto the bus, no database, until N TestCompleted.

    .venv/bin/python -m bench.tester_only --tests 10000 --rtt 0 --concurrency 100 [--json out.json]

The end-to-end rows are bound by the embedded database; the tester has none. This starts the
bench's mail stack (tuned Dovecot with N users, the SMTP process, the RTT's latency proxies), a
private nats-server and ONE tester-svc process started as `bench.system` starts it (uvicorn
factory, generated key rings, allowed loopback networks, the test CA, `MW_TESTER_CONCURRENCY`),
publishes one TestRequested per mailbox (credentials sealed with the transit ring, as mailbox-svc
seals them) with at most `--outstanding` requests without a result, and reads TestCompleted from a
JetStream subscription until all N arrived. By default the limit loop (aioimaplib + aiosmtplib,
same concurrency) runs first on the same mailboxes and RTT: the reference row, and the first
login of every user (which creates its maildir) stays out of the tester's figures.

Prints tests/s overall and per chunk of 1,000, latency (publish -> completed, and the tester's
own started_at -> finished_at), failures, CPU of the tester and nats-server per test, and the
tester's RSS after the first chunk and at the end (the issue's "memory flat" check).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # `python bench/tester_only.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import psutil
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import SecretStr

from bench.mailboxes import DOMAIN, Mailbox, client_mailboxes, make_users, save_mailboxes
from bench.models import Endpoint, Outcome, RunResult, Usage
from bench.monitor import ResourceMonitor, tree_cpu_s
from bench.report import format_tables
from bench.results import percentile, summarize
from bench.runners import ClientLoopRunner, RunPlan
from bench.stack import MailStack
from bench.system import tester_egress_env
from contracts.envelope import make_envelope, parse_envelope
from contracts.events import (
    EmailSettingsChanged,
    SealedCredentials,
    SettingsSnapshot,
    TestCompleted,
    TestRequested,
)
from contracts.models import (
    Direction,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    ServerTarget,
    TestStatus,
    TlsMode,
)
from contracts.models import Endpoint as ServerEndpoint
from contracts.subjects import SETTINGS_CHANGED, TEST_COMPLETED, TEST_REQUESTED
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.sealing import seal_for_test
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers.devstack import ServiceProcess, ServiceSpec, load_or_create_keys
from mailwarden_servers.nats import NatsServer
from mailwarden_servers.ports import free_port

__all__ = ["Checkpoint", "build_requests", "growth_pct", "main", "parse_args"]

TESTER = ServiceSpec("tester-svc", "tester_svc.app:create_app", 0)
PROFILE_OWNER = Owner(kind=OwnerKind.USER, id="bench-admin", name="Bench admin", email=f"admin@{DOMAIN}")
TESTER_DURABLE = "tester-svc"  # tester_svc.app.DURABLE
MAX_CONNECTIONS = 300  # the profile's per-host limit at its maximum, as in the end-to-end rows
STALL_S = 180.0  # no result for this long: the run is stuck, stop with what we know


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.tester_only", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--tests", type=_positive, default=10_000, help="N tests, one mailbox each (default 10000)"
    )
    p.add_argument("--rtt", type=float, default=0.0, help="round-trip time in ms (0 = direct, no proxy)")
    p.add_argument("--concurrency", type=_positive, default=100,
                   help="MW_TESTER_CONCURRENCY of the tester and the limit loop's concurrency")  # fmt: skip
    p.add_argument("--outstanding", type=_positive, default=None, metavar="W",
                   help="most requests published without a result yet (default 2 x concurrency: the "
                        "tester never idles, and latency is not mostly queueing)")  # fmt: skip
    p.add_argument("--chunk", type=_positive, default=1000,
                   help="tests per line of the per-chunk table; RSS growth is measured from the first")  # fmt: skip
    p.add_argument("--no-limit", action="store_true",
                   help="skip the limit loop run first (then the tester pays the users' first logins)")  # fmt: skip
    p.add_argument("--tester-env", action="append", default=[], metavar="MW_X=V",
                   help="extra environment for the tester process (repeatable)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="write the rows and checkpoints as JSON here")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir, removed after")
    args = p.parse_args(argv)
    if not 0 <= args.rtt <= 2000:
        p.error("--rtt must be within 0..2000 ms")
    for item in args.tester_env:
        if "=" not in item or not item.startswith("MW_"):
            p.error(f"--tester-env takes MW_NAME=value, not {item!r}")
    if args.outstanding is None:
        args.outstanding = 2 * args.concurrency
    if args.chunk >= args.tests:
        args.chunk = max(args.tests // 5, 1)
    return args


# --- requests -------------------------------------------------------------------------------------


def _sealed(transit: KeyRing, m: Mailbox, test_id: str, target: ServerTarget) -> SealedCredentials:
    """Sealed as mailbox-svc seals them: to the test, direction, host and port, with an expiry."""
    not_after = datetime.now(UTC) + timedelta(hours=6)
    sealed = {
        direction.value: seal_for_test(
            transit,
            m.user,
            SecretStr(m.password),
            test_id=test_id,
            direction=direction.value,
            host=ep.host,
            port=ep.port,
            not_after=not_after,
        )
        for direction, ep in ((Direction.INCOMING, target.incoming), (Direction.OUTGOING, target.outgoing))
    }
    return SealedCredentials.model_validate(sealed)


def build_requests(mailboxes: Sequence[Mailbox], endpoint: Endpoint, transit: KeyRing) -> list[TestRequested]:
    """One TestRequested per mailbox, both directions, credentials sealed for transit per direction."""
    incoming = ServerEndpoint(host=endpoint.host, port=endpoint.imaps_port, tls=TlsMode.IMPLICIT)
    outgoing = ServerEndpoint(host=endpoint.host, port=endpoint.smtp_port, tls=TlsMode.STARTTLS)
    target = ServerTarget(
        profile_id="bench-profile",
        profile_name="bench",
        incoming_protocol=IncomingProtocol.IMAP,
        incoming=incoming,
        outgoing=outgoing,
        max_concurrent_connections=MAX_CONNECTIONS,
    )
    ports = sorted({endpoint.imaps_port, endpoint.smtp_port})
    now = datetime.now(UTC)
    out: list[TestRequested] = []
    for m in mailboxes:
        mailbox_id = f"mbx_{m.user}"
        test_id = uuid.uuid4().hex
        sealed = _sealed(transit, m, test_id, target)
        owner = Owner(kind=OwnerKind.USER, id=m.user, name=m.user, email=m.address)
        out.append(
            TestRequested(
                test_id=test_id,
                mailbox=MailboxRef(
                    mailbox_id=mailbox_id,
                    email=m.address,
                    owner=owner,
                    profile_id=target.profile_id,
                    profile_owner=PROFILE_OWNER,
                ),
                target=target,
                credentials=sealed,
                directions=[Direction.INCOMING, Direction.OUTGOING],
                allowed_ports=ports,
                requested_at=now,
            )
        )
    return out


def _errors(done: TestCompleted) -> tuple[str, ...]:
    out: list[str] = []
    for prefix, result in (("imap", done.incoming), ("smtp", done.outgoing)):
        if result is None:
            out.append(f"{prefix}_missing")
        elif result.status is TestStatus.FAILURE:
            code = result.error.code if result.error is not None else "unknown"
            out.append(f"{prefix}_auth" if code == "auth_failed" else f"{prefix}_error:{code}")
    return tuple(out)


# --- measurement ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The state after `done` results: when, tester CPU and RSS, nats CPU, the bench's own CPU."""

    done: int
    t_s: float
    tester_cpu_s: float
    tester_rss_mb: float
    nats_cpu_s: float
    bench_cpu_s: float


def growth_pct(first: float, last: float) -> float:
    """Relative growth from `first` to `last` in percent (0 when there is no first value)."""
    return 0.0 if first <= 0 else 100.0 * (last - first) / first


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


@dataclass
class _Run:
    """Requests sent and results seen, by test id."""

    index: dict[str, int]
    sent: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)  # tester's started_at -> finished_at, s
    duplicates: int = 0
    in_tester: list[int] = field(default_factory=list)  # sampled num_ack_pending of the tester's consumer
    last_result: float = field(default_factory=time.monotonic)


class TesterDriver:
    """Publishes the requests with a bounded window and collects the results (one event loop)."""

    def __init__(
        self,
        nats_url: str,
        tester_pid: int,
        nats_pid: int,
        requests: list[TestRequested],
        window: int,
        chunk: int,
    ) -> None:
        self.nats_url = nats_url
        self.tester_pid = tester_pid
        self.nats_pid = nats_pid
        self.bodies = [(r.test_id, make_envelope(r, "bench-tester-only")) for r in requests]
        self.ports = sorted({p for r in requests for p in r.allowed_ports})
        self.window = window
        self.chunk = chunk
        self.run = _Run(index={r.test_id: i for i, r in enumerate(requests)})
        self.checkpoints: list[Checkpoint] = []
        self.wall_s = 0.0

    def checkpoint(self, done: int, t0: float) -> None:
        self.checkpoints.append(
            Checkpoint(
                done=done,
                t_s=time.monotonic() - t0,
                tester_cpu_s=tree_cpu_s([self.tester_pid]),
                tester_rss_mb=_rss_mb(self.tester_pid),
                nats_cpu_s=tree_cpu_s([self.nats_pid]),
                bench_cpu_s=_self_cpu(),
            )
        )

    async def _sample_in_tester(self, js: JetStreamContext) -> None:
        """Once a second: how many requests the tester holds (delivered, not yet acked)."""
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                info = await js.consumer_info("MW_TESTS", TESTER_DURABLE)
                self.run.in_tester.append(info.num_ack_pending or 0)

    async def go(self) -> None:
        n = len(self.bodies)
        nc = await nats.connect(self.nats_url, name="bench-tester-only", max_reconnect_attempts=3)
        try:
            await ensure_streams(nc, ServiceSettings())
            js = nc.jetstream()
            # The org's ports as profile-svc announces them: the tester takes them from here, not
            # from the requests (without them it would wait for profile-svc, absent in this bench).
            org = SettingsSnapshot(version=1, allowed_ports=self.ports)
            await js.publish(
                SETTINGS_CHANGED, make_envelope(EmailSettingsChanged(settings=org), "bench").to_bytes()
            )
            slots = asyncio.Semaphore(self.window)
            finished = asyncio.Event()
            run = self.run
            t0 = time.monotonic()

            async def on_completed(msg: Msg) -> None:
                env = parse_envelope(msg.data, TestCompleted)
                tid = env.data.test_id
                now = time.monotonic()
                if tid not in run.sent or tid in run.outcomes:
                    run.duplicates += 1
                    return
                errors = _errors(env.data)
                run.outcomes[tid] = Outcome(
                    index=run.index[tid], ok=not errors, latency_s=now - run.sent[tid], errors=errors
                )
                run.durations.append((env.data.finished_at - env.data.started_at).total_seconds())
                run.last_result = now
                slots.release()
                done = len(run.outcomes)
                if done % self.chunk == 0 or done == n:
                    self.checkpoint(done, t0)
                if done == n:
                    finished.set()

            # Only results published from now on: the stream is private, but be exact anyway.
            sub = await js.subscribe(
                TEST_COMPLETED, cb=on_completed, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
            )
            self.checkpoint(0, t0)
            t0 = time.monotonic()
            run.last_result = t0
            sampler = asyncio.create_task(self._sample_in_tester(js))
            for tid, env in self.bodies:
                await slots.acquire()
                run.sent[tid] = time.monotonic()
                await js.publish(
                    TEST_REQUESTED, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)}, stream="MW_TESTS"
                )
            while not finished.is_set():
                if time.monotonic() - run.last_result > STALL_S:
                    raise RuntimeError(f"stuck: {len(run.outcomes)} of {n} results, none for {STALL_S:.0f}s")
                try:
                    await asyncio.wait_for(finished.wait(), 5.0)
                except TimeoutError:
                    continue
            self.wall_s = time.monotonic() - t0
            sampler.cancel()
            await sub.unsubscribe()
        finally:
            await nc.close()


# --- the run --------------------------------------------------------------------------------------


def _tester_env(nats_url: str, keys: dict[str, str], ca_file: str, concurrency: int,
                extra: dict[str, str]) -> dict[str, str]:  # fmt: skip
    """As bench.system starts a real (not fake) tester: generated keys, no dev mode."""
    return {
        "MW_NATS_URL": nats_url,
        **keys,
        **tester_egress_env(ca_file),
        "MW_TESTER_CONCURRENCY": str(concurrency),
        "MW_INSTANCE": "tester-svc-bench-1",
        **extra,
    }


@dataclass
class Outcomes:
    rows: list[RunResult]
    checkpoints: list[Checkpoint]
    load: dict[str, float]


def run(args: argparse.Namespace, workdir: Path) -> Outcomes:
    n = args.tests
    users = make_users(n)
    mailboxes = client_mailboxes(users, 0.0)
    save_mailboxes(workdir / "valid.json", mailboxes)
    rows: list[RunResult] = []
    load: dict[str, float] = {"loadavg_1m_start": round(os.getloadavg()[0], 2)}
    started = time.monotonic()
    _log(f"starting Dovecot and SMTP with {n:,} users in {workdir} ...")
    with MailStack(workdir / "stack", users) as stack:
        endpoint = stack.endpoint(args.rtt)
        _log(f"servers up after {time.monotonic() - started:.1f}s; endpoint {endpoint.via}")
        if not args.no_limit:
            plan = RunPlan(args.rtt, "valid", mailboxes, workdir / "valid.json", n, args.concurrency)
            limit = ClientLoopRunner("limit", workdir)(stack, plan)
            rows.append(limit)
            _log(f"  limit: {limit.tests_per_s:.1f} tests/s, fail {limit.failed}")
        load["loadavg_1m_before_tester"] = round(os.getloadavg()[0], 2)
        keys = load_or_create_keys(workdir / "keys.env")
        transit = KeyRing.parse(keys["MW_TRANSIT_KEYS"])
        requests = build_requests(mailboxes, endpoint, transit)
        extra_env = dict(e.split("=", 1) for e in args.tester_env)
        with NatsServer(workdir / "nats") as nats_server:
            env = _tester_env(nats_server.url, keys, str(stack.certs.ca), args.concurrency, extra_env)
            tester = ServiceProcess(workdir / "logs", TESTER, free_port(), env).start()
            try:
                assert tester.pid is not None and nats_server.pid is not None
                driver = TesterDriver(
                    nats_server.url, tester.pid, nats_server.pid, requests, args.outstanding, args.chunk
                )
                groups = stack.process_groups(endpoint) | {"tester": [tester.pid], "nats": [nats_server.pid]}
                cpu0 = _self_cpu()
                with ResourceMonitor(groups) as monitor:
                    asyncio.run(driver.go())
                bench_cpu = _self_cpu() - cpu0
            finally:
                tester.stop()
        load["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
        rows.append(_tester_row(args, stack, endpoint, mailboxes, driver, monitor, bench_cpu))
    _log(f"done in {time.monotonic() - started:.0f}s")
    return Outcomes(rows, driver.checkpoints, load)


def _tester_row(
    args: argparse.Namespace,
    stack: MailStack,
    endpoint: Endpoint,
    mailboxes: list[Mailbox],
    driver: TesterDriver,
    monitor: ResourceMonitor,
    bench_cpu: float,
) -> RunResult:
    usage = monitor.usage()
    tester, nats_usage = usage.pop("tester"), usage.pop("nats")
    usage["client"] = Usage(cpu_s=round(bench_cpu, 3), peak_rss_mb=round(_self_peak_mb(), 1), processes=1)
    measured = sum(u.cpu_s for u in usage.values()) + tester.cpu_s + nats_usage.cpu_s
    usage["other"] = Usage(
        cpu_s=round(max(monitor.machine_busy_s - measured, 0.0), 3), peak_rss_mb=0.0, processes=0
    )
    usage["tester"], usage["nats"] = tester, nats_usage
    n = len(mailboxes)
    cps = driver.checkpoints
    first = next((c for c in cps if c.done >= min(args.chunk, n)), cps[-1])
    durations = sorted(driver.run.durations)
    extra: dict[str, float | int | str] = {
        "tester_cpu_s": tester.cpu_s,
        "tester_cpu_ms_per_test": round(1000 * tester.cpu_s / n, 2),
        "nats_cpu_s": nats_usage.cpu_s,
        "nats_cpu_ms_per_test": round(1000 * nats_usage.cpu_s / n, 2),
        "tester_rss_mb_idle": round(cps[0].tester_rss_mb, 1),
        "tester_rss_mb_first_chunk": round(first.tester_rss_mb, 1),
        "tester_rss_first_chunk_tests": first.done,
        "tester_rss_mb_end": round(cps[-1].tester_rss_mb, 1),
        "tester_rss_growth_pct": round(growth_pct(first.tester_rss_mb, cps[-1].tester_rss_mb), 1),
        "tester_peak_rss_mb": tester.peak_rss_mb,
        "test_p50_ms": round(1000 * percentile(durations, 50), 1),
        "test_p95_ms": round(1000 * percentile(durations, 95), 1),
        "test_p99_ms": round(1000 * percentile(durations, 99), 1),
        "outstanding": args.outstanding,
        "mean_in_tester": round(statistics.fmean(driver.run.in_tester), 1) if driver.run.in_tester else 0,
        "max_in_tester": max(driver.run.in_tester, default=0),
        "duplicate_results": driver.run.duplicates,
    }
    return summarize(
        runner="tester-only",
        rtt_ms=args.rtt,
        via=endpoint.via,
        variant="valid",
        mailboxes=mailboxes,
        outcomes=list(driver.run.outcomes.values()),
        wall_s=driver.wall_s,
        concurrency=args.concurrency,
        usage=usage,
        extra=extra,
    )


def _self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- report ---------------------------------------------------------------------------------------


def format_checkpoints(cps: Sequence[Checkpoint]) -> str:
    """One line per chunk: its rate, the tester's and nats' CPU per test in it, RSS at its end."""
    lines = ["tests         tests/s  tester CPU ms/test  nats CPU ms/test  bench CPU ms/test  tester RSS MB",
             "------------  -------  ------------------  ----------------  -----------------  -------------",
             f"{'idle':<12}  {'-':>7}  {'-':>18}  {'-':>16}  {'-':>17}  {cps[0].tester_rss_mb:>13.1f}"]  # fmt: skip
    for a, b in itertools.pairwise(cps):
        k = b.done - a.done
        dt_s = max(b.t_s - (a.t_s if a.done else 0.0), 1e-9)
        lines.append(
            f"{f'{a.done + 1}-{b.done}':<12}  {k / dt_s:>7.1f}  {1000 * (b.tester_cpu_s - a.tester_cpu_s) / k:>18.2f}"
            f"  {1000 * (b.nats_cpu_s - a.nats_cpu_s) / k:>16.2f}  {1000 * (b.bench_cpu_s - a.bench_cpu_s) / k:>17.2f}"
            f"  {b.tester_rss_mb:>13.1f}"
        )
    return "\n".join(lines)


def format_summary(row: RunResult) -> str:
    e, u = row.extra, row.usage
    return "\n".join([
        f"tester-only: {row.measured:,} tests in {row.wall_s:.1f} s = {row.tests_per_s:.1f} tests/s; "
        f"failures {row.failed} {dict(row.failure_kinds) or ''}; duplicate results {e['duplicate_results']}",
        f"latency publish -> TestCompleted p50/p95/p99: {row.p50_ms:.0f} / {row.p95_ms:.0f} / {row.p99_ms:.0f} ms "
        f"(at most {e['outstanding']} outstanding; in the tester: mean {e['mean_in_tester']}, max "
        f"{e['max_in_tester']}); tester's own test time: "
        f"{e['test_p50_ms']:.0f} / {e['test_p95_ms']:.0f} / {e['test_p99_ms']:.0f} ms",
        f"tester CPU {u['tester'].cpu_s:.1f} s = {e['tester_cpu_ms_per_test']} ms/test; "
        f"nats-server CPU {u['nats'].cpu_s:.1f} s = {e['nats_cpu_ms_per_test']} ms/test; "
        f"bench process {u['client'].cpu_s:.1f} s",
        f"tester RSS: {e['tester_rss_mb_idle']} MB idle, {e['tester_rss_mb_first_chunk']} MB after "
        f"{e['tester_rss_first_chunk_tests']:,} tests, {e['tester_rss_mb_end']} MB after {row.measured:,} "
        f"({float(e['tester_rss_growth_pct']):+.1f} %); peak {u['tester'].peak_rss_mb:.0f} MB",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [Path(sys.executable).name, "-m", "bench.tester_only", *(sys.argv[1:] if argv is None else argv)]
    )
    began = dt.datetime.now(dt.UTC)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailwarden-tester-only-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    try:
        out = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    tester = out.rows[-1]
    print(f"\ntester alone, {began:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores; load average (1 min) "
          + ", ".join(f"{k.removeprefix('loadavg_1m_')} {v}" for k, v in out.load.items()))  # fmt: skip
    print(f"command: {command}\n")
    print(format_tables(out.rows))
    print()
    print(format_summary(tester))
    print()
    print(format_checkpoints(out.checkpoints))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "started": began.isoformat(timespec="seconds"),
            "command": command,
            "load": out.load,
            "rows": [r.model_dump() for r in out.rows],
            "checkpoints": [c.__dict__ for c in out.checkpoints],
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nJSON: {args.json}")
    return 0 if all(r.failed == 0 for r in out.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
