"""The readable tables (plain aligned text) and the ratios between runners at the same RTT."""

from __future__ import annotations

from collections.abc import Sequence

from bench.models import RunResult

__all__ = ["format_tables", "ratio"]

_GROUPS = ("client", "dovecot", "smtp", "proxy")
_SYSTEM = ("profile-svc", "mailbox-svc", "tester-svc", "alert-svc", "nats", "mongo")


def _reference(rows: Sequence[RunResult], row: RunResult, runner: str) -> RunResult | None:
    for other in rows:
        if other.runner == runner and other.rtt_ms == row.rtt_ms and other.variant == row.variant:
            return other
    return None


def ratio(rows: Sequence[RunResult], row: RunResult, runner: str) -> float | None:
    """tests/s of `row` over that of `runner` at the same RTT and variant (None if absent)."""
    ref = _reference(rows, row, runner)
    if ref is None or ref.tests_per_s <= 0:
        return None
    return row.tests_per_s / ref.tests_per_s


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])


def _x(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def format_tables(rows: Sequence[RunResult]) -> str:
    """Throughput/latency table, then a resources table; `*` marks extrapolated rows."""
    perf: list[list[str]] = []
    res: list[list[str]] = []
    for r in rows:
        mark = "*" if r.extrapolated else ""
        fails = f"{r.failed}/{r.expected_failures}" + ("" if r.failures_as_expected else " !")
        perf.append([
            f"{r.rtt_ms:g} ms ({r.via})", r.runner, r.variant,
            f"{r.measured}/{r.mailboxes}", f"{r.concurrency}",
            f"{r.wall_s:.1f}{mark}", f"{r.tests_per_s:.1f}",
            _x(ratio(rows, r, "sequential")), _x(ratio(rows, r, "limit")),
            f"{r.p50_ms:.0f}", f"{r.p95_ms:.0f}", f"{r.p99_ms:.0f}", fails,
        ])  # fmt: skip
        cells = [f"{r.rtt_ms:g} ms", r.runner, r.variant, f"{r.cpu_ms_per_test:.1f}"]
        for g in _GROUPS:
            u = r.usage.get(g)
            cells.append("-" if u is None else f"{u.cpu_s:.1f} / {u.peak_rss_mb:.0f}")
        other = r.usage.get("other")
        cells.append("-" if other is None else f"{other.cpu_s:.1f}")
        res.append(cells)
    perf_header = ["RTT", "runner", "variant", "tests/N", "conc", "wall s", "tests/s",
                   "x seq", "x limit", "p50 ms", "p95 ms", "p99 ms", "fail/exp"]  # fmt: skip
    res_header = ["RTT", "runner", "variant", "CPU ms/test",
                  *(f"{g} CPU s / peak MB" for g in _GROUPS), "other CPU s"]  # fmt: skip
    tables = [_table(perf_header, perf), _table(res_header, res)]
    system = [r for r in rows if "mongo" in r.usage]
    if system:
        tables.append(_system_table(system))
    notes = (
        "* wall time extrapolated to N from the tests run (tests/s is measured).\n"
        "x seq / x limit: tests/s over the sequential baseline / the limit at the same RTT and variant.\n"
        "fail/exp: failed tests / mailboxes given a wrong password ('!' = not exactly those failed).\n"
        "CPU ms/test: client + servers + proxies per test run. other CPU s: the rest of the machine\n"
        "was busy that long during the run (other load; should be near 0 for a clean measurement)."
    )
    if system:
        notes += (
            "\nmailwarden rows: per process CPU s / peak MB; ms/test: our four services, nats-server\n"
            "(bus) and SecantusDB (db); DB w/r per test: write / read commands from serverStatus\n"
            "opcounters; docs w/u (bk) per test: documents written / of them updated (change stream,\n"
            "read after the row), (bk): of the written, bookkeeping (relay positions, jobs, job batch records);\n"
            "alert p50: TestRequested -> AlertRaised; tester RSS after the row / tests\n"
            "that tester process has run so far."
        )
    return "\n\n".join([*tables, notes])


def _system_table(rows: Sequence[RunResult]) -> str:
    header = ["RTT", "runner", "variant", "svc ms/test", "bus ms/test", "db ms/test",
              *(f"{g} CPU s / MB" for g in _SYSTEM), "DB w/r per test", "docs w/u (bk) per test", "alert p50 ms",
              "tester RSS MB / tests"]  # fmt: skip
    body = []
    for r in rows:
        e = r.extra
        cells = [f"{r.rtt_ms:g} ms", r.runner, r.variant, f"{e.get('services_cpu_ms_per_test', 0)}",
                 f"{e.get('bus_cpu_ms_per_test', 0)}", f"{e.get('db_cpu_ms_per_test', 0)}"]  # fmt: skip
        for g in _SYSTEM:
            u = r.usage.get(g)
            cells.append("-" if u is None else f"{u.cpu_s:.1f} / {u.peak_rss_mb:.0f}")
        cells += [
            f"{e.get('db_writes_per_test', 0)} / {e.get('db_reads_per_test', 0)}",
            f"{e.get('docs_written_per_test', '-')} / {e.get('docs_updated_per_test', '-')}"
            f" ({e.get('docs_bookkeeping_per_test', '-')})",
            f"{float(e.get('p50_alert_ms', 0)):.0f}",
            f"{e.get('tester_rss_mb_end', 0)} / {e.get('tester_tests_served', 0)}",
        ]
        body.append(cells)
    return _table(header, body)
