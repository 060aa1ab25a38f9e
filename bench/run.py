"""Benchmark bulk mailbox testing: the sequential baseline and the limit, at several RTTs.

    .venv/bin/python -m bench.run [--mailboxes 1000 | --large] [--rtt 0,50,100] [--json out.json]

Starts a tuned private Dovecot (IMAPS), the SMTP server process (STARTTLS + AUTH) and one
latency proxy per server port and RTT, creates N users at once, then runs, per RTT: the limit
(asyncio, bounded concurrency) on all N mailboxes with valid passwords and with a share of wrong
ones, and the sequential baseline (stdlib) on a sample, extrapolated. Prints the tables, writes
JSON. Everything listens on and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e import MailwardenBench, MailwardenRunner
from bench.isolation import IsolationRunner
from bench.mailboxes import client_mailboxes, make_users, save_mailboxes
from bench.models import BenchReport, RunResult
from bench.report import format_tables
from bench.runners import ClientLoopRunner, Runner, RunPlan
from bench.stack import MailStack
from bench.system import TesterConfig

__all__ = ["main", "parse_args"]

LARGE = 10_000


def _rtts(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("--rtt takes comma-separated milliseconds, e.g. 0,50,100") from exc
    if not values or any(v < 0 or v > 2000 for v in values):
        raise argparse.ArgumentTypeError("each RTT must be within 0..2000 ms")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError("comma-separated process counts, e.g. 1,2,4") from exc
    if any(v < 1 or v > 16 for v in values):
        raise argparse.ArgumentTypeError("each count must be within 1..16")
    return values


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be within 0..1 (exclusive)")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--mailboxes", type=_positive, default=1000, help="N users/mailboxes (default 1000)")
    p.add_argument("--large", action="store_true", help=f"N = {LARGE:,}")
    p.add_argument("--rtt", type=_rtts, default=[0.0, 50.0, 100.0], help="round-trip times in ms")
    p.add_argument("--concurrency", type=_positive, default=100, help="tests in flight for the limit")
    p.add_argument("--sequential-sample", type=_positive, default=20, metavar="K",
                   help="sequential baseline at RTT > 0 runs K mailboxes, extrapolated to N")  # fmt: skip
    p.add_argument("--sequential-sample-rtt0", type=_positive, default=200, metavar="K0",
                   help="the same at RTT 0 (tests are fast there)")  # fmt: skip
    p.add_argument("--wrong-passwords", type=_fraction, default=0.1,
                   help="share of mailboxes with a wrong password in the failure variant (0 = skip it)")  # fmt: skip
    p.add_argument("--proxy-at-zero", action="store_true",
                   help="RTT 0 through a 0-delay proxy (default: direct to the servers)")  # fmt: skip
    p.add_argument("--no-warmup", action="store_true", help="skip the first pass that creates the maildirs")
    p.add_argument("--no-mailwarden", action="store_true",
                   help="skip the mailwarden end-to-end, overhead and scale-out rows")  # fmt: skip
    p.add_argument("--no-limit", action="store_true",
                   help="skip the limit rows (e.g. a 10,000-mailbox job row on a busy machine)")  # fmt: skip
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the overhead row (e.g. a 10,000-mailbox job row on its own)")  # fmt: skip
    p.add_argument("--mailwarden-sample", type=_positive, default=200, metavar="M",
                   help="mailboxes in the end-to-end rows (SecantusDB bounds them at a few tests/s); "
                        "wall time is extrapolated to N")  # fmt: skip
    p.add_argument("--system-env", action="append", default=[], metavar="MW_X=V",
                   help="extra environment for mailwarden's processes (repeatable), "
                        "e.g. MW_TESTER_SHARED_LIMITS=false")  # fmt: skip
    p.add_argument("--tester-concurrency", type=_positive, default=None, metavar="C",
                   help="tests in flight in mailwarden's tester (default: --concurrency)")  # fmt: skip
    p.add_argument("--scale-out", type=_counts, default=[1, 2, 4], metavar="K,K",
                   help="tester process counts for the scale-out rows (total concurrency kept); '' = none")  # fmt: skip
    p.add_argument("--scale-out-rtt", type=float, default=0.0, metavar="MS",
                   help="RTT of the scale-out rows (default 0: where the tester's CPU is the bound)")  # fmt: skip
    p.add_argument("--isolation", type=int, default=1000, metavar="D",
                   help="the isolation row: a job of D mailboxes on a server that never answers while "
                        "single tests of working mailboxes run (0 = skip)")  # fmt: skip
    p.add_argument("--isolation-tests", type=_positive, default=50, metavar="K",
                   help="single tests measured in the isolation row")  # fmt: skip
    p.add_argument("--timeout", type=float, default=30.0, help="per-operation client timeout, s")
    p.add_argument("--json", type=Path, default=None, help="write every figure as JSON here")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir, removed after")
    args = p.parse_args(argv)
    if args.large:
        args.mailboxes = LARGE
    for item in args.system_env:
        if "=" not in item or not item.startswith("MW_"):
            p.error(f"--system-env takes MW_NAME=value, not {item!r}")
    if args.tester_concurrency is None:
        args.tester_concurrency = args.concurrency
    return args


def _machine() -> dict[str, str | int | float]:
    dovecot = subprocess.run(["dovecot", "--version"], capture_output=True, text=True, check=False)
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cores": os.cpu_count() or 0,
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dovecot": dovecot.stdout.strip(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> list[RunResult]:
    """Start the stack, run every row, stop the stack."""
    n = args.mailboxes
    users = make_users(n)
    valid = client_mailboxes(users, 0.0)
    wrong = client_mailboxes(users, args.wrong_passwords) if args.wrong_passwords > 0 else []
    save_mailboxes(workdir / "valid.json", valid)
    if wrong:
        save_mailboxes(workdir / "wrong.json", wrong)
    wrong_label = f"wrong-{args.wrong_passwords:.0%}"
    limit: Runner = ClientLoopRunner("limit", workdir, args.timeout)
    sequential: Runner = ClientLoopRunner("sequential", workdir, args.timeout)

    def plan(rtt: float, bad: bool, count: int, label: str | None = None) -> RunPlan:
        boxes, path = (wrong, workdir / "wrong.json") if bad else (valid, workdir / "valid.json")
        return RunPlan(rtt, wrong_label if bad else "valid", boxes, path, min(count, n),
                       args.concurrency, label)  # fmt: skip

    results: list[RunResult] = []
    started = time.monotonic()
    _log(f"starting Dovecot and SMTP with {n:,} users in {workdir} ...")
    with MailStack(workdir / "stack", users, proxy_at_zero=args.proxy_at_zero) as stack:
        _log(f"servers up after {time.monotonic() - started:.1f}s")
        e2e = (
            None
            if args.no_mailwarden
            else MailwardenBench(
                workdir,
                stack,
                [*args.rtt, 0.0, args.scale_out_rtt],
                n,
                dict(e.split("=", 1) for e in args.system_env),
            )
        )
        schedule = _schedule(args, plan, limit, sequential, e2e, bool(wrong))
        try:
            _run_schedule(schedule, stack, results)
        finally:
            if e2e is not None:
                e2e.close()
    _log(f"done in {time.monotonic() - started:.0f}s")
    return results


def _schedule(
    args: argparse.Namespace,
    plan: Callable[..., RunPlan],
    limit: Runner,
    sequential: Runner,
    e2e: MailwardenBench | None,
    wrong: bool,
) -> list[tuple[Runner, RunPlan]]:
    """Per RTT: limit, sequential, then mailwarden; then the wrong-password mailwarden row (once,
    at 50 ms or the first RTT: the tester's breaker would refuse the same wrong passwords again),
    the overhead row and the scale-out rows."""
    n, conc = args.mailboxes, args.tester_concurrency
    m = min(args.mailwarden_sample, n)

    def first_m(p: RunPlan) -> RunPlan:
        return RunPlan(p.rtt_ms, p.variant, p.mailboxes[:m], p.mailboxes_file, m, p.concurrency, p.label)

    def e2e_row(name: str, cfg: TesterConfig, rtt: float, bad: bool = False) -> tuple[Runner, RunPlan]:
        assert e2e is not None
        # a row waits at least 900 s, and longer for big jobs (5 tests/s)
        runner = MailwardenRunner(e2e, name, cfg, timeout_s=max(900.0, m / 5), total=n)
        return runner, first_m(plan(rtt, bad, m))

    schedule: list[tuple[Runner, RunPlan]] = []
    if not args.no_warmup:
        schedule.append((limit, plan(0.0, False, n, "warm-up")))
    for rtt in args.rtt:
        sample = args.sequential_sample_rtt0 if rtt == 0 else args.sequential_sample
        if not args.no_limit:
            schedule.append((limit, plan(rtt, False, n)))
        if wrong and not args.no_limit:
            schedule.append((limit, plan(rtt, True, n)))
        schedule.append((sequential, plan(rtt, False, sample)))
        if wrong and rtt == 0:
            schedule.append((sequential, plan(rtt, True, sample)))
        if e2e is not None:
            schedule.append(e2e_row("mailwarden", TesterConfig(1, conc), rtt))
    if e2e is None:
        return schedule
    if wrong:
        rtt = 50.0 if 50.0 in args.rtt else args.rtt[0]
        schedule.append(e2e_row("mailwarden", TesterConfig(1, conc), rtt, bad=True))
    if not args.no_overhead:
        schedule.append(e2e_row("overhead", TesterConfig(1, conc, fake=True), 0.0))
    for k in args.scale_out:
        cfg = TesterConfig(k, max(conc // k, 1))
        schedule.append(e2e_row(f"scale-out/{k}", cfg, args.scale_out_rtt))
    if args.isolation > 0:
        iso = IsolationRunner(e2e, TesterConfig(1, conc), args.isolation, args.isolation_tests)
        schedule.append((iso, first_m(plan(0.0, False, m))))
    return schedule


def _run_schedule(schedule: list[tuple[Runner, RunPlan]], stack: MailStack, results: list[RunResult]) -> None:
    for runner, p in schedule:
        t0 = time.monotonic()
        try:
            row = runner(stack, p)
        except Exception as exc:  # one broken row must not lose the others' figures
            _log(f"  {p.rtt_ms:>5g} ms  {p.label or runner.name:<10} {p.variant:<9} FAILED: {exc!r}"[:2000])
            continue
        results.append(row)
        _log(f"  {row.rtt_ms:>5g} ms  {row.runner:<10} {row.variant:<9} {row.measured:>6} tests "
             f"{row.tests_per_s:8.1f}/s  fail {row.failed}/{row.expected_failures}  "
             f"({time.monotonic() - t0:.0f}s)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [Path(sys.executable).name, "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]
    )
    began = dt.datetime.now(dt.UTC)
    machine = _machine()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailwarden-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every server and service we started stops.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nmailwarden bench, {began:%Y-%m-%d %H:%M} UTC, {machine['cores']} cores ({machine['cpu']})")
    print(f"command: {command}\n")
    print(format_tables(results))
    if args.json is not None:
        report = BenchReport(
            started=began.isoformat(timespec="seconds"),
            command=command,
            machine=machine,
            settings={
                "mailboxes": args.mailboxes,
                "rtt_ms": args.rtt,
                "concurrency": args.concurrency,
                "sequential_sample": args.sequential_sample,
                "sequential_sample_rtt0": args.sequential_sample_rtt0,
                "wrong_passwords": args.wrong_passwords,
                "rtt0_via": "proxy" if args.proxy_at_zero else "direct",
                "warmup": not args.no_warmup,
                "mailwarden": not args.no_mailwarden,
                "tester_concurrency": args.tester_concurrency,
                "mailwarden_sample": args.mailwarden_sample,
                "system_env": " ".join(args.system_env),
                "scale_out": [float(k) for k in args.scale_out],
                "scale_out_rtt_ms": args.scale_out_rtt,
            },
            results=results,
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.model_dump_json(indent=2))
        print(f"\nJSON: {args.json}")
    bad = [r for r in results if not r.failures_as_expected]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
