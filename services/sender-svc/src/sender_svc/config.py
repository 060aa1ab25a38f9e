"""sender-svc settings (env prefix ``MW_``): egress policy, trust, limits, retries and timeouts."""

from __future__ import annotations

from pydantic import Field, model_validator

from mailwarden_mailnet.policy import Network, NetworksText, parse_networks
from mailwarden_runtime.hostleases import check_lease_renewal
from mailwarden_runtime.settings import CaFile, DnsTimeoutS, KvTimeoutS, ServiceSettings, TransitKeySettings


class Settings(ServiceSettings, TransitKeySettings):
    sender_allow_networks: NetworksText = Field(
        "",
        description="Comma list of CIDRs the sender may reach although private/loopback (on-premises servers).",
    )
    sender_ca_file: CaFile = None
    sender_concurrency: int = Field(16, ge=1, le=1000, description="Messages this process sends at once.")
    sender_max_message_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=12 * 1024 * 1024,
        description="Largest message accepted (the whole MIME message, attachments encoded).",
    )
    sender_attachment_buckets: str = Field(
        "MW_OUTGOING", description="Comma list of Object Store buckets attachments may be read from."
    )
    sender_attachment_max_age_days: float = Field(
        7.0,
        gt=0,
        le=3650,
        description=(
            "Age after which objects in the attachment buckets sender-svc creates at startup expire "
            "(buckets that exist already keep their own settings)."
        ),
    )
    sender_rate_per_minute: float = Field(
        120.0,
        gt=0,
        le=100_000,
        description="Messages one mailbox may send per minute (across every replica).",
    )
    sender_rate_burst: float = Field(
        20.0, ge=1, le=100_000, description="Messages one mailbox may send at once before the rate applies."
    )
    sender_max_attempts: int = Field(
        8, ge=1, le=100, description="Attempts before a transient failure is final."
    )
    sender_backoff_s: float = Field(30.0, gt=0, description="First retry delay; doubles per attempt.")
    sender_backoff_max_s: float = Field(3600.0, gt=0, description="Longest retry delay.")
    sender_step_timeout_s: float = Field(30.0, gt=0, le=300, description="Deadline of each SMTP command.")
    sender_data_timeout_s: float = Field(
        120.0, gt=0, le=600, description="Deadline of the reply to the end of the message."
    )
    sender_dns_timeout_s: DnsTimeoutS = 5.0
    sender_lease_s: float = Field(
        300.0,
        ge=1,
        le=3600,
        description=(
            "A claimed message belongs to one sender this long; a message left in 'sending' (handed "
            "over, reply not stored) past it is reported uncertain, never resent."
        ),
    )
    sender_hold_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description=(
            "A send queued by this process is inserted claimed for it this long, so it is sent "
            "without a claim round trip; if this process stops first, any replica takes it after "
            "this (0: no claim at insertion)."
        ),
    )
    sender_idle_keep_s: float = Field(
        5.0, ge=0, le=300, description="How long an idle logged-in connection is kept for the next message."
    )
    sender_poll_s: float = Field(
        0.5, gt=0, le=60, description="How long an idle sending loop waits for work."
    )
    sender_sweep_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description=(
            "How often the queue is searched for due messages not submitted to this process "
            "(other replicas', retries come due, a stopped process's)."
        ),
    )
    sender_read_cache_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "How long a mailbox, a profile and the org settings read from the database are reused "
            "(they are read twice per mail); a change another replica took in reaches sending within "
            "this (one this process took in, at once)."
        ),
    )
    sender_shared_limits: bool = Field(
        True,
        description=(
            "Hold the per-host connection limit and the per-mailbox rate across every replica "
            "(JetStream KV buckets MW_SENDER_HOSTS, MW_SENDER_RATES); off: per process only."
        ),
    )
    sender_kv_timeout_s: KvTimeoutS = 1.0
    sender_host_lease_ttl_s: float = Field(
        15.0,
        ge=1,
        le=600,
        description=(
            "A connection's shared slot lives this long unless renewed (every third of it): a killed "
            "replica's connections free their slots within it."
        ),
    )
    sender_copy_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Attempts at a sent mail's copy in the Sent folder before it is reported failed.",
    )
    sender_copy_retry_s: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="Wait before a Sent-folder copy that failed transiently is tried again.",
    )
    sender_ehlo_name: str = Field("mailwarden.invalid", description="Name sent in SMTP EHLO.")

    @model_validator(mode="after")
    def _lease_outlives_a_send(self) -> Settings:
        # A live sender must store its outcome before its 'sending' lease ends, or the message would
        # be reported uncertain while it is still being sent: the payload and its reply fit in it.
        if self.sender_lease_s < 2 * max(self.sender_data_timeout_s, self.sender_step_timeout_s) + 2:
            raise ValueError("sender_lease_s must be at least 2 x sender_data_timeout_s + 2")
        return self

    @model_validator(mode="after")
    def _renewal_fits_in_a_lease(self) -> Settings:
        check_lease_renewal(
            self.sender_kv_timeout_s,
            self.sender_host_lease_ttl_s,
            "sender_kv_timeout_s",
            "sender_host_lease_ttl_s",
        )
        return self

    @property
    def allow_networks(self) -> list[Network]:
        return parse_networks(self.sender_allow_networks)

    @property
    def attachment_buckets(self) -> frozenset[str]:
        return frozenset(b.strip() for b in self.sender_attachment_buckets.split(",") if b.strip())
