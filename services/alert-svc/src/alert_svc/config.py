"""alert-svc settings (env prefix ``MW_``; alert-specific ones are ``MW_ALERT_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from contracts.events import AlertLevel
from mailwarden_mailnet.policy import NetworksText
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(8004, ge=0, le=65535, description="Port of the HTTP API.")

    # Root-cause grouping and the majority alert.
    alert_group_window_s: float = Field(
        600.0, gt=0, description="Window in which same-cause profile failures are grouped."
    )
    alert_group_min_mailboxes: int = Field(
        2, ge=2, description="Mailboxes failing with one profile-scope cause that make one profile alert."
    )
    alert_majority_window_s: float = Field(3600.0, gt=0, description="Window of the >50 % failure alert.")
    alert_majority_min_mailboxes: int = Field(
        2, ge=1, description="A profile needs at least this many mailboxes for the >50 % alert."
    )

    alert_read_model_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long org settings, profile names and mailbox counts are kept in memory "
        "(changes this instance handles apply at once; 0: read them on every event).",
    )

    alert_occurrence_sweep_s: float = Field(
        3600.0,
        gt=0,
        description="How often the repeats already folded into their alert are looked for and deleted "
        "(the fold deletes them at once; the sweep removes what a crash or the outbox relay left).",
    )

    # Channels.
    alert_channel_poll_s: float = Field(1.0, gt=0, description="How often the channel workers look for work.")
    alert_digest_interval_s: float = Field(
        300.0, gt=0, description="One email digest per recipient per this interval."
    )
    alert_digest_max_items: int = Field(100, ge=1, description="Alerts listed in one digest mail.")
    alert_email_levels: list[AlertLevel] = Field(
        default_factory=lambda: list[AlertLevel](["error"]),
        description="Levels mailed to a recipient who chose none (JSON list).",
    )
    alert_smtp_host: str = Field("", description="SMTP server for notification mail; empty disables mail.")
    alert_smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    alert_smtp_tls: Literal["starttls", "implicit", "none"] = Field("starttls", description="SMTP TLS mode.")
    alert_smtp_username: str = Field("", description="SMTP AUTH user (empty: no AUTH).")
    alert_smtp_password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    alert_smtp_from: str = Field("mailwarden@localhost", description="Sender of notification mail.")
    alert_smtp_ca_file: str = Field("", description="Extra CA bundle to trust for the SMTP server.")
    alert_smtp_timeout_s: float = Field(15.0, gt=0, description="SMTP timeout.")
    alert_smtp_allow_networks: NetworksText = Field(
        "",
        description=(
            "Private or loopback ranges the notification SMTP server may be at, comma-separated (e.g. "
            "`10.0.3.0/24` for an internal relay). Unset: public addresses only, like every outbound "
            "connection (the port is `MW_ALERT_SMTP_PORT`)."
        ),
    )
    alert_email_backoff_s: float = Field(30.0, gt=0, description="First delay after a failed digest send.")

    alert_webhook_timeout_s: float = Field(
        10.0, gt=0, description="Deadline of one whole delivery: resolve, connect, TLS, request, response."
    )
    alert_webhook_allow_networks: NetworksText = Field(
        "",
        description="Comma list of CIDRs a webhook may reach although private/loopback (an intranet "
        "receiver, tests); empty: public addresses only.",
    )
    alert_webhook_ports: list[int] = Field(
        default_factory=lambda: [443],
        description="Ports a webhook URL may use (JSON list); 443 matches the deployed NetworkPolicy.",
    )
    alert_webhook_max_response_kb: int = Field(
        16, ge=1, le=1024, description="Bytes of a receiver's response body read at most (KiB)."
    )
    alert_webhook_per_host: int = Field(4, ge=1, le=100, description="Deliveries in flight to one host.")
    alert_webhook_concurrency: int = Field(32, ge=1, le=1000, description="Deliveries in flight in all.")
    alert_webhook_ca_file: str = Field("", description="Extra CA bundle to trust for https webhooks.")
    alert_webhook_backoff_s: float = Field(5.0, gt=0, description="First retry delay (doubles each time).")
    alert_webhook_backoff_max_s: float = Field(3600.0, gt=0, description="Longest retry delay.")
    alert_webhook_max_attempts: int = Field(10, ge=1, le=50, description="Attempts before a delivery fails.")
    alert_webhook_keys: SecretStr | None = Field(
        None, description="Key ring `kid:base64key,...` sealing webhook secrets at rest; first seals."
    )

    @field_validator("alert_webhook_ports")
    @classmethod
    def _check_ports(cls, value: list[int]) -> list[int]:
        if any(not 1 <= p <= 65535 for p in value):
            raise ValueError("ports are 1-65535")
        return value

    def webhook_key_ring(self) -> KeyRing:
        """The ring sealing webhook secrets; dev mode falls back to a fixed, unprotected key."""
        if self.alert_webhook_keys is not None:
            return KeyRing.parse(self.alert_webhook_keys.get_secret_value())
        if self.dev_mode:
            return KeyRing.for_development("alert-webhooks")
        raise RuntimeError("MW_ALERT_WEBHOOK_KEYS is required outside MW_DEV_MODE")
