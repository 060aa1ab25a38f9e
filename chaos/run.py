"""``make chaos``: every reliability and security scenario at full size, each printing its figure.

    python -m chaos.run                      # all scenarios (~20 min on 2 cores)
    python -m chaos.run --only A1,D1 --json chaos.json

The fast versions of the same scenarios run in ``make test`` (tests/reliability). Exit code 1 if
any scenario failed. docs/reliability.md explains each one and keeps the table of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from chaos import delivery, duplicates, fuzz, malformed, permissions, secrets, sending, shutdown, sync
from chaos.harness import Figure
from chaos.infra import Infra, slow_target, started
from mailwarden_servers import SmtpServer

Scenario = Callable[[Infra, Path], Awaitable[Figure]]


async def _a1(infra: Infra, work: Path) -> Figure:
    with slow_target(infra, work, delay_ms=20) as target:
        return await delivery.kill_testers(infra, work, tests=1000, kills=5, testers=3, target=target)


async def _a9(infra: Infra, work: Path) -> Figure:
    # 250 ms each way: a test takes ~9 s, so all 100 are in flight at once.
    with slow_target(infra, work, delay_ms=250) as target:
        return await delivery.sigterm_in_flight(infra, work, tests=100, target=target, grace_s=25)


def _stop_with(fault: shutdown.Fault) -> Scenario:
    async def scenario(infra: Infra, work: Path) -> Figure:
        # 250 ms each way, as A9: tests are in flight when the fault comes and the signal follows.
        with slow_target(infra, work, delay_ms=250) as target:
            return await shutdown.stop_with_fault(infra, work, fault=fault, tests=40, target=target)

    return scenario


async def _d1(infra: Infra, work: Path) -> Figure:
    # The canary user must be added to the SMTP server: use one in this process.
    with SmtpServer(infra.certs, {"alice": "alice-pw"}) as smtp:
        own = Infra(
            infra.workdir, infra.certs, infra.mongo_uri, infra.dovecot, smtp.port_starttls, infra.mongo
        )
        return await secrets.canary(own, work, smtp)


async def _d4(infra: Infra, work: Path) -> Figure:
    fig = await permissions.refusals(work / "refusals")
    flow = await permissions.flow_as_own_users(infra, work / "flow")
    fig.figures |= {f"flow.{k}": v for k, v in flow.figures.items()}
    fig.problems += flow.problems
    integration = await permissions.integration_and_audit(work / "integration")
    fig.figures |= {f"integration.{k}": v for k, v in integration.figures.items()}
    fig.problems += integration.problems
    return fig


SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "A1": ("kill -9 a tester 5x during 1,000 tests, 3 testers", _a1),
    "A2": (
        "every event type re-published with its id, inside and after the window (100 mailboxes)",
        lambda i, w: duplicates.duplicate_events(i, w, mailboxes=100),
    ),
    "A3": (
        "nats-server SIGTERM, SIGTERM, SIGKILL during 2,000 tests",
        lambda i, w: delivery.nats_restarts(i, w, tests=2000),
    ),
    "A4": (
        "database stopped 20 s during 1,000 tests",
        lambda i, w: delivery.database_outage(i, w, tests=1000, outage_s=20),
    ),
    "A5": (
        "1,000 malformed among 1,000 valid messages on every consumed subject",
        lambda i, w: malformed.malformed_messages(i, w, rounds=100),
    ),
    "A9": ("SIGTERM every service with 100 tests in flight", _a9),
    "A10": (
        "kill -9 sender-svc at each point of a send (before SMTP, after RCPT, after DATA, after the outcome), 3x",
        lambda i, w: sending.kill_at_each_point(i, w, rounds=3),
    ),
    "S1": (
        "SIGTERM every service after nats-server was killed, 40 tests in flight",
        _stop_with("nats killed"),
    ),
    "S2": (
        "SIGTERM every service after the database was killed, 40 tests in flight",
        _stop_with("database killed"),
    ),
    "S3": (
        "SIGTERM every service while NATS is a silent peer, 40 tests in flight",
        _stop_with("nats silent"),
    ),
    "Y1": (
        "kill -9 of a sync worker during a 2,000-message first sync",
        lambda i, w: sync.sync_fault(i, w, messages=2000, fault="kill"),
    ),
    "Y2": (
        "NATS restart during a 2,000-message first sync",
        lambda i, w: sync.sync_fault(i, w, messages=2000, fault="nats"),
    ),
    "Y3": (
        "database restart during a 2,000-message first sync",
        lambda i, w: sync.sync_fault(i, w, messages=2000, fault="database"),
    ),
    "D1": ("canary password through every path, DEBUG logs", _d1),
    "D4": ("production NATS permissions (rendered from the Helm values)", _d4),
    "F1": (
        "HTTP + NATS APIs fuzzed (Hypothesis, 100 examples per operation)",
        lambda i, w: fuzz.fuzz_apis(i, w, examples=100),
    ),
}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated scenario ids, e.g. A1,D1")
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep servers' data and logs here")
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mailwarden-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # Dovecot's unprivileged processes must traverse it
    results: list[dict[str, object]] = []
    with started(root / "servers") as infra:
        for sid in wanted:
            title, scenario = SCENARIOS[sid]
            print(f"== {sid}: {title}", flush=True)
            t0 = time.monotonic()
            try:
                fig = await scenario(infra, root / sid)
            except Exception as exc:  # a scenario that crashes is a failed scenario, with its reason
                fig = Figure(title, problems=[f"crashed: {exc!r}"[:500]])
            print(f"{sid} {fig.line()}  ({time.monotonic() - t0:.0f}s)", flush=True)
            results.append(
                {
                    "id": sid,
                    "scenario": title,
                    "ok": fig.ok,
                    "figures": fig.figures,
                    "problems": fig.problems,
                    "date": datetime.now(UTC).date().isoformat(),
                    "command": f"make chaos CHAOS_ARGS='--only {sid}'",
                }
            )
    print("\n| id | scenario | figure | result |\n|---|---|---|---|")
    for r in results:
        fig_text = ", ".join(f"{k}={v}" for k, v in r["figures"].items())  # type: ignore[attr-defined]
        print(f"| {r['id']} | {r['scenario']} | {fig_text} | {'pass' if r['ok'] else 'FAIL'} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwork directory (logs): {root}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
