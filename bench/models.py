"""The data that crosses process boundaries or ends up in the JSON report (pydantic at the edges)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Model):
    """Where a client connects for one RTT: the servers directly or their latency proxies."""

    host: Literal["127.0.0.1"] = "127.0.0.1"  # loopback only, by construction
    imaps_port: int = Field(ge=1, le=65535)
    smtp_port: int = Field(ge=1, le=65535, description="STARTTLS submission port")
    rtt_ms: float = Field(ge=0)
    via: Literal["direct", "proxy"]
    ca_file: str = Field(description="the test CA; clients verify the server certificate against it")


class WorkloadSpec(_Model):
    """What `python -m bench.workload` runs; the mailboxes come from a 0600 file (passwords)."""

    runner: Literal["sequential", "limit"]
    endpoint: Endpoint
    mailboxes_file: str
    first: int = Field(default=0, ge=0)
    count: int = Field(ge=1)
    concurrency: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)


class Outcome(_Model):
    """One test of one mailbox: `errors` names each failed half ("imap_auth", "smtp_error:...")."""

    index: int
    ok: bool
    latency_s: float
    errors: tuple[str, ...] = ()


class WorkloadReport(_Model):
    """What the client process measured about itself (CPU only over the run, not start-up)."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    outcomes: list[Outcome]


class Usage(_Model):
    """CPU and memory of one process group (a server, the client, the proxies) during one run."""

    cpu_s: float
    peak_rss_mb: float
    processes: int = Field(description="largest number of processes seen at once")


class RunResult(_Model):
    """One row of the results table.

    `runner` is "sequential", "limit", "warm-up" today; "mailwarden", "overhead" and
    "scale-out/<k>" rows fit the same shape (`extra` for their own figures, e.g. DB writes/test).
    """

    runner: str
    rtt_ms: float
    via: str
    variant: Literal["valid", "wrong-10%"] | str
    mailboxes: int = Field(description="N the figures are for")
    measured: int = Field(description="tests actually run (< mailboxes when extrapolated)")
    extrapolated: bool
    concurrency: int
    wall_s: float = Field(description="measured wall time; extrapolated to N if `extrapolated`")
    tests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok: int
    failed: int
    expected_failures: int
    failures_as_expected: bool = Field(description="failed exactly the wrong-password mailboxes")
    failure_kinds: dict[str, int]
    usage: dict[str, Usage] = Field(description="per process group: client, dovecot, smtp, proxy, ...")
    extra: dict[str, float | int | str] = Field(default_factory=dict)

    @property
    def cpu_ms_per_test(self) -> float:
        """All measured processes together (not "other" load), per test actually run."""
        cpu = sum(u.cpu_s for name, u in self.usage.items() if name != "other")
        return 1000 * cpu / max(self.measured, 1)


class BenchReport(_Model):
    """The whole JSON file: when, how, on what, and every row."""

    started: str
    command: str
    machine: dict[str, str | int | float]
    settings: dict[str, str | int | float | bool | list[float]]
    results: list[RunResult]
