"""Turn per-test outcomes and resource usage into a `RunResult` row (shared by every runner)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from bench.mailboxes import Mailbox
from bench.models import Outcome, RunResult, Usage

__all__ = ["percentile", "summarize"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(
    *,
    runner: str,
    rtt_ms: float,
    via: str,
    variant: str,
    mailboxes: Sequence[Mailbox],
    outcomes: Sequence[Outcome],
    wall_s: float,
    concurrency: int,
    usage: dict[str, Usage],
    total: int | None = None,
    extra: dict[str, float | int | str] | None = None,
) -> RunResult:
    """One row. With `total` > len(outcomes) the row is a sample: wall time is extrapolated.

    `mailboxes` is the full client list the outcome indexes point into; a run's failures are
    "as expected" when exactly the mailboxes given a wrong password failed, each on both halves
    with an authentication error.
    """
    measured = len(outcomes)
    n = total if total is not None else measured
    rate = measured / wall_s if wall_s > 0 else 0.0
    latencies = sorted(o.latency_s for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    expected = {o.index for o in outcomes if not mailboxes[o.index].expect_ok}
    as_expected = {o.index for o in failed} == expected and all(
        set(o.errors) == {"imap_auth", "smtp_auth"} for o in failed
    )
    kinds = Counter(e for o in failed for e in o.errors)
    return RunResult(
        runner=runner,
        rtt_ms=rtt_ms,
        via=via,
        variant=variant,
        mailboxes=n,
        measured=measured,
        extrapolated=n > measured,
        concurrency=concurrency,
        wall_s=round(n / rate if n > measured and rate else wall_s, 3),
        tests_per_s=round(rate, 2),
        p50_ms=round(1000 * percentile(latencies, 50), 1),
        p95_ms=round(1000 * percentile(latencies, 95), 1),
        p99_ms=round(1000 * percentile(latencies, 99), 1),
        ok=measured - len(failed),
        failed=len(failed),
        expected_failures=len(expected),
        failures_as_expected=as_expected,
        failure_kinds=dict(sorted(kinds.items())),
        usage=usage,
        extra=extra or {},
    )
