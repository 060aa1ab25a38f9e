"""tester-svc settings (env prefix ``MW_``): egress policy, trust, limits and timeouts."""

from __future__ import annotations

from pydantic import Field, model_validator

from mailwarden_mailnet.policy import Network, NetworksText, parse_networks
from mailwarden_runtime.hostleases import check_lease_renewal
from mailwarden_runtime.settings import CaFile, DnsTimeoutS, KvTimeoutS, ServiceSettings, TransitKeySettings


class Settings(ServiceSettings, TransitKeySettings):
    tester_allow_networks: NetworksText = Field(
        "",
        description="Comma list of CIDRs allowed although private/loopback (on-premises servers, tests).",
    )
    tester_ca_file: CaFile = None
    tester_concurrency: int = Field(16, ge=1, le=1000, description="Tests run at once by this process.")
    tester_max_waiting: int = Field(
        64,
        ge=0,
        le=10_000,
        description=(
            "Requests held besides MW_TESTER_CONCURRENCY while they wait for a busy host's "
            "connection slot (kept alive with in-progress acks, no connection open): a slow or dead "
            "server's queue waits here, so other hosts' tests are still fetched and run at once."
        ),
    )
    tester_batch_size: int = Field(8, ge=1, le=256, description="Messages pulled per fetch.")
    tester_ack_wait_s: float = Field(30.0, gt=0, description="JetStream ack wait (kept alive while testing).")
    tester_test_timeout_s: float = Field(60.0, gt=0, le=600, description="Deadline of one whole test.")
    tester_step_timeout_s: float = Field(15.0, gt=0, le=300, description="Deadline of each protocol step.")
    tester_dns_timeout_s: DnsTimeoutS = 5.0
    tester_max_line_bytes: int = Field(8192, ge=512, le=1_048_576, description="Longest response line.")
    tester_max_response_bytes: int = Field(
        65536, ge=4096, le=16_777_216, description="Most bytes read from one server connection."
    )
    tester_breaker_threshold: int = Field(
        3, ge=1, le=100, description="Auth failures per (host, user) in the window that pause logins."
    )
    tester_breaker_window_s: float = Field(900.0, gt=0, description="Auth-failure breaker window.")
    tester_shared_limits: bool = Field(
        True,
        description=(
            "Share the per-host connection limit and the auth-failure breaker between tester "
            "processes through JetStream KV (buckets MW_TESTER_HOSTS, MW_TESTER_BREAKER)."
        ),
    )
    tester_kv_timeout_s: KvTimeoutS = Field(
        1.0, description="Deadline of one KV round trip; past it a test falls back to this process's limits."
    )
    tester_lease_ttl_s: float = Field(
        15.0,
        ge=0.5,
        le=300,
        description=(
            "Lifetime of a shared per-host connection lease; its holder renews it every third of "
            "this while the test runs, so a killed tester's slots free within it. Must exceed the "
            "wall-clock skew between testers (allowed: under a third of it) and be at least 3x "
            "MW_TESTER_KV_TIMEOUT_S."
        ),
    )
    tester_ehlo_name: str = Field("mailwarden-tester.invalid", description="Name sent in SMTP EHLO.")
    tester_fake_success_for_benchmarks: bool = Field(
        False,
        description=(
            "BENCHMARKS ONLY: answer every request with a success at once, without connecting "
            "(measures the bus + database + alert cost of a test). Refused unless MW_DEV_MODE=true."
        ),
    )

    @model_validator(mode="after")
    def _check_lease_ttl(self) -> Settings:
        check_lease_renewal(
            self.tester_kv_timeout_s, self.tester_lease_ttl_s, "tester_kv_timeout_s", "tester_lease_ttl_s"
        )
        return self

    @property
    def allow_networks(self) -> list[Network]:
        return parse_networks(self.tester_allow_networks)
