"""sync-svc settings (env prefix ``MW_``): egress policy, trust, limits, timeouts, leases."""

from __future__ import annotations

from pydantic import Field

from mailwarden_mailnet.policy import Network, NetworksText, parse_networks
from mailwarden_runtime.settings import CaFile, DnsTimeoutS, KvTimeoutS, ServiceSettings, TransitKeySettings


class Settings(ServiceSettings, TransitKeySettings):
    sync_allow_networks: NetworksText = Field(
        "",
        description="Comma list of CIDRs the sync may reach although private/loopback (on-premises servers).",
    )
    sync_ca_file: CaFile = None
    sync_max_sessions: int = Field(
        200,
        ge=1,
        le=10_000,
        description="Mailboxes this process synchronizes at once (its connection budget).",
    )
    sync_max_message_bytes: int = Field(
        26_214_400,
        ge=65_536,
        le=268_435_456,
        description="Size cap: a larger message gives headers only and too_large (its raw bytes are not stored).",
    )
    sync_preview_chars: int = Field(
        500, ge=0, le=2000, description="Length of the text preview in EmailReceived."
    )
    sync_fetch_batch: int = Field(
        100,
        ge=1,
        le=1000,
        description="Messages published and recorded together: one wait for NATS acks and one ledger "
        "insert per batch (with other mailboxes' batches).",
    )
    sync_fetch_window: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="UIDs asked for in one IMAP UID FETCH command; the messages stream in and are "
        "published in batches of sync_fetch_batch while the rest arrives, and the next window's command "
        "is sent while this one streams in. The watermark is written once per window.",
    )
    sync_first_window: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Messages at the head of the INBOX a first sync searches first (ESEARCH servers), "
        "and starts fetching as soon as that search is answered; the whole INBOX's search goes out with "
        "it, and its answer is in while they stream in, so the next window's FETCH follows at once.",
    )
    sync_idle: bool = Field(True, description="Use IMAP IDLE where the server offers it (else poll).")
    sync_idle_renew_s: float = Field(
        1500.0,
        ge=5,
        le=1740,
        description="Re-issue IDLE after this long (RFC 2177: servers drop it at 30 min).",
    )
    sync_poll_floor_s: float = Field(
        60.0,
        ge=0.05,
        le=86_400,
        description="Shortest poll interval; the profile's minimum polling interval applies when longer.",
    )
    sync_poll_jitter: float = Field(
        0.1, ge=0, le=0.5, description="Random share added to each poll interval."
    )
    sync_step_timeout_s: float = Field(30.0, gt=0, le=600, description="Deadline of each protocol step.")
    sync_dns_timeout_s: DnsTimeoutS = 5.0
    sync_max_line_bytes: int = Field(
        65_536, ge=1024, le=1_048_576, description="Longest server response line."
    )
    sync_retry_base_s: float = Field(
        5.0, gt=0, le=3600, description="First wait after a failed sync (doubles)."
    )
    sync_retry_max_s: float = Field(900.0, gt=0, le=86_400, description="Longest wait between failed syncs.")
    sync_lease_ttl_s: float = Field(
        15.0,
        ge=1,
        le=600,
        description="Lease on a mailbox (NATS KV MW_SYNC_LEASES), renewed every third: a killed worker's "
        "mailboxes are taken over within it.",
    )
    sync_reconcile_s: float = Field(
        2.0,
        gt=0,
        le=300,
        description="How often a worker re-reads which mailboxes to sync and their controls.",
    )
    sync_tls_read_kb: int = Field(
        32,
        ge=16,
        le=256,
        description="Read buffer of each TLS connection in KB. asyncio allocates 256 KB per connection by "
        "default, resident while a session idles; 32 KB brings an idling mailbox from ~308 KB to ~86 KB "
        "(bench/sync_idle_sessions.py). Applies to every TLS connection of the process.",
    )
    sync_gc_young_objects: int = Field(
        20_000,
        ge=0,
        le=1_000_000,
        description="Python's collector runs its youngest generation after this many new container objects "
        "(Python's default: 700; 0 keeps it). A big first sync holds a few hundred parsed messages in flight: "
        "with 700 the collections and the full ones they lead to cost 0.1-0.3 ms per message "
        "(bench/README.md, one big INBOX). Applies to the whole process.",
    )
    sync_shared_host_limits: bool = Field(
        True,
        description="Hold the profile's maximum concurrent connections per host across every worker "
        "(a lease per session in NATS KV MW_SYNC_HOSTS); off: per process only.",
    )
    sync_host_lease_ttl_s: float = Field(
        30.0,
        ge=3,
        le=600,
        description="TTL of a host lease, renewed every third while its session lasts: a killed worker's "
        "connections count against the host until it runs out.",
    )
    sync_kv_timeout_s: KvTimeoutS = 1.0
    sync_raw_bucket: str = Field(
        "MW_EMAIL_RAW",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="JetStream Object Store bucket of raw messages.",
    )
    sync_raw_max_age_days: float = Field(
        30.0, gt=0, le=3650, description="How long raw messages stay in the object store."
    )

    @property
    def allow_networks(self) -> list[Network]:
        return parse_networks(self.sync_allow_networks)
