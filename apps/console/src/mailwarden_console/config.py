"""The console's settings, from the environment (prefix ``MW_CONSOLE_``; NATS as every service reads it)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailwarden_runtime.egress.policy import Network, NetworksText, parse_networks


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MW_CONSOLE_", env_ignore_empty=True, extra="ignore", populate_by_name=True
    )

    profile_url: str = Field("http://127.0.0.1:8081", description="Base URL of profile-svc's HTTP API.")
    mailbox_url: str = Field("http://127.0.0.1:8082", description="Base URL of mailbox-svc's HTTP API.")
    alert_url: str = Field("http://127.0.0.1:8084", description="Base URL of alert-svc's HTTP API.")
    sync_url: str = Field("http://127.0.0.1:8086", description="Base URL of sync-svc's HTTP API.")
    nats_url: str = Field(
        "nats://127.0.0.1:4222",
        validation_alias=AliasChoices("MW_CONSOLE_NATS_URL", "MW_NATS_URL", "NATS_URL"),
        description="NATS server(s), comma-separated: live job progress, statuses and alerts.",
    )
    session_keys: SecretStr | None = Field(
        None,
        description=(
            "Key ring `kid:base64key,...` sealing the session cookie (AES-256-GCM): the first seals, "
            "every key opens. Required outside MW_DEV_MODE."
        ),
    )
    dev_mode: bool = Field(
        False,
        validation_alias=AliasChoices("MW_CONSOLE_DEV_MODE", "MW_DEV_MODE"),
        description="A built-in session key. Never in production.",
    )
    cookie_secure: bool = Field(
        True, description="Send the session cookie over HTTPS only (false only for http://127.0.0.1)."
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, le=7 * 86400, description="A sign-in lasts this long.")
    request_timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of each call to a service.")
    page_size: int = Field(25, ge=5, le=200, description="Rows per page in the lists.")
    job_history_h: float = Field(
        24.0, gt=0, le=24 * 30, description="The jobs list replays job events of this many hours."
    )
    oidc_issuer: str | None = Field(
        None,
        description=(
            "Issuer URL of the organisation's OpenID Connect provider: its discovery document is "
            "`<issuer>/.well-known/openid-configuration`. Unset: API-token sign-in only."
        ),
    )
    oidc_client_id: str | None = Field(None, description="The console's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="Client secret (confidential client); unset for a public client (PKCE alone)."
    )
    oidc_scopes: str = Field(
        "openid profile", description="Scopes asked for (space-separated); `openid` is always included."
    )
    oidc_redirect_url: str | None = Field(
        None,
        description=(
            "The callback registered at the provider; default: this console's "
            "`/signin/oidc/callback` on the URL the browser used."
        ),
    )
    oidc_provider_name: str = Field(
        "your organisation", description='Shown on the sign-in button: "Sign in with <name>".'
    )
    oidc_timeout_s: float = Field(10.0, gt=0, le=60, description="Deadline of each call to the provider.")
    oidc_allow_networks: NetworksText = Field(
        "",
        description=(
            "Private or loopback ranges the calls to the provider may connect to, comma-separated "
            "(e.g. `10.0.5.0/24` for an in-house provider). Unset: public addresses only."
        ),
    )
    http_host: str = Field(
        "127.0.0.1",
        validation_alias=AliasChoices("MW_CONSOLE_HTTP_HOST", "MW_HTTP_HOST"),
        description="Address the console listens on.",
    )
    http_port: int = Field(
        8080,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("MW_CONSOLE_HTTP_PORT", "MW_HTTP_PORT"),
        description="Port of the console.",
    )

    @property
    def oidc_networks(self) -> list[Network]:
        return parse_networks(self.oidc_allow_networks)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)
