"""Authentication settings every service reads (env prefix ``MW_AUTH_``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailwarden_runtime.egress.http import UrlRefused, parse_target
from mailwarden_runtime.egress.policy import Network, NetworksText, parse_networks

# Asymmetric signatures only: a verifier that accepts HS* can be fed a token signed with the
# public key as an HMAC secret (key confusion); ``none`` is no signature at all.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MW_AUTH_", env_ignore_empty=True, extra="ignore")

    oidc_issuer: str | None = Field(
        None,
        description="OIDC issuer (`iss`) of the organisation's identity provider; unset: JWTs are refused.",
    )
    oidc_audience: str | None = Field(
        None, description="Audience (`aud`) our tokens must carry, e.g. `mailwarden`."
    )
    oidc_jwks_url: str | None = Field(
        None, description="JWKS URL of the identity provider (its `jwks_uri`); fetched and cached."
    )
    oidc_algorithms: list[str] = Field(
        ["RS256", "PS256", "ES256", "EdDSA"],
        description="Signature algorithms accepted (asymmetric only; `none` and HS* are refused).",
    )
    oidc_roles_claim: str = Field(
        "mailwarden_roles", description="Claim with the caller's roles (list or space-separated)."
    )
    oidc_mailboxes_claim: str = Field(
        "mailwarden_mailboxes", description="Claim with mailbox ids granted to the caller."
    )
    oidc_leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew allowed on `exp`/`nbf`/`iat`.")
    jwks_cache_s: float = Field(
        300.0, ge=1, description="How long fetched signing keys are used before a refetch."
    )
    jwks_timeout_s: float = Field(
        5.0, gt=0, le=30, description="Deadline of one JWKS fetch (connect, read, whole)."
    )
    jwks_allow_networks: NetworksText = Field(
        "",
        description=(
            "Private or loopback ranges the JWKS fetch may connect to, comma-separated (e.g. "
            "`10.0.5.0/24` for an in-house identity provider). Unset: public addresses only, like "
            "every outbound connection."
        ),
    )
    token_bucket: str = Field(
        "MW_API_TOKENS",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="JetStream KV bucket of hashed API tokens.",
    )
    token_cache_s: float = Field(
        5.0,
        ge=0,
        le=60,
        description="How long a service trusts a looked-up API token (revocation delay bound).",
    )
    public_metrics: bool = Field(
        False, description="Serve `/metrics` without a token (scrapers on a private network)."
    )

    @field_validator("oidc_jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_target(value)
            except UrlRefused as exc:
                raise ValueError(f"oidc_jwks_url: {exc}") from None
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ALLOWED_ALGORITHMS]
        if bad:
            raise ValueError(f"not allowed: {', '.join(bad)} (asymmetric algorithms only)")
        if not value:
            raise ValueError("at least one algorithm")
        return value

    @property
    def jwks_networks(self) -> list[Network]:
        return parse_networks(self.jwks_allow_networks)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_audience and self.oidc_jwks_url)
