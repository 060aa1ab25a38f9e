"""Settings shared by every service, read from the environment (twelve-factor III).

Each service subclasses :class:`ServiceSettings` and adds its own fields. Every variable has the
``MW_`` prefix; ``NATS_URL`` and ``MONGODB_URI`` are also accepted as they are, as operators expect.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MW_", env_ignore_empty=True, extra="ignore")

    nats_url: str = Field(
        "nats://127.0.0.1:4222",
        validation_alias=AliasChoices("MW_NATS_URL", "NATS_URL"),
        description="NATS server(s), comma-separated.",
    )
    mongodb_uri: str = Field(
        "mongodb://127.0.0.1:27017/",
        validation_alias=AliasChoices("MW_MONGODB_URI", "MONGODB_URI"),
        description="MongoDB connection string.",
    )
    mongodb_db: str = Field(
        "mailwarden",
        pattern=r"^[A-Za-z0-9_-]{1,40}$",
        description="Database name prefix: each service uses `<prefix>_<service>`, e.g. mailwarden_mailbox_svc.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP API.")
    dev_mode: bool = Field(False, description="Development defaults (built-in keys). Never in production.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="Structured JSON logs.")
    log_setup: bool = Field(True, description="Install our log handler at start (tests turn it off).")
    stream_replicas: int = Field(1, ge=1, le=5, description="JetStream replicas (3 in production).")
    dedupe_window_s: float = Field(
        600.0, gt=0, description="JetStream duplicate window for re-published events."
    )
    instance: str = Field("", description="Name of this process in logs and events (default: host-pid).")
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        le=600,
        description=(
            "On SIGTERM, the most the service's stop may take in all (handlers' grace, the outbox's last "
            "pass, closing NATS and the database); each step is bounded inside it. Keep it, plus uvicorn's "
            "--timeout-graceful-shutdown, below the orchestrator's grace period (Kubernetes: 40 s)."
        ),
    )
    shutdown_grace_s: float = Field(
        10.0,
        ge=0,
        le=600,
        description=(
            "On SIGTERM, how long handlers in flight may finish; the messages of those still running "
            "then go back to JetStream for another process. Capped so the rest of the stop fits in "
            "`MW_SHUTDOWN_TIMEOUT_S`."
        ),
    )
    nats_timeout_s: float = Field(
        5.0,
        gt=0,
        le=60,
        description="NATS connect, flush and drain timeout: no publish or close waits longer on a dead server.",
    )
    nats_ping_interval_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How often the client pings NATS; a server silent for this times the allowed pings is dropped.",
    )
    nats_max_outstanding_pings: int = Field(
        2, ge=1, le=10, description="Pings without an answer before the connection counts as dead."
    )
    mongodb_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="MongoDB client-side timeout of every operation (`timeoutMS`), retries included.",
    )
    mongodb_retry_writes: bool = Field(
        False,
        description=(
            "Send writes as retryable writes (the driver retries a write once after a network error; "
            "the server keeps every reply for 30 min). Off by default: every write is conditional, "
            "keyed or reconciled, and a failed handler's message is redelivered, so the registry adds "
            "nothing we rely on, while the embedded server scans it on every write (bench/write_cost.py)."
        ),
    )
    rpc_concurrency: int = Field(
        32, ge=1, le=10_000, description="Request-reply requests one process handles at once."
    )
    event_relay: Literal["auto", "change_stream", "outbox"] = Field(
        "auto",
        description=(
            "How events written with the state reach NATS: `change_stream` (needs a replica set: no "
            "extra database write per event), `outbox` (any MongoDB, standalone too: one more update "
            "per document to clear what was published), `auto`: change_stream on a replica set."
        ),
    )


class TransitKeySettings(BaseSettings):
    """Keys that seal credentials on the bus (mailbox-svc and profile-svc seal, tester-svc opens)."""

    model_config = SettingsConfigDict(env_prefix="MW_", env_ignore_empty=True, extra="ignore")

    transit_keys: SecretStr | None = Field(
        None, description="Key ring `kid:base64key,...` for credentials in TestRequested; first seals."
    )


# Kinds of setting the services that connect to mail servers share (tester-svc, sync-svc,
# sender-svc): each names its own (MW_SYNC_CA_FILE, MW_SENDER_CA_FILE, ...), what one accepts and
# says is declared here once. The allow-list is ``mailwarden_runtime.egress.policy.NetworksText``.
CaFile = Annotated[str | None, Field(description="Extra CA bundle trusted besides the system CAs.")]
DnsTimeoutS = Annotated[float, Field(gt=0, le=60, description="Deadline of the DNS lookup.")]
KvTimeoutS = Annotated[
    float, Field(gt=0, le=10, description="Deadline of one NATS KV call of the shared limits.")
]
