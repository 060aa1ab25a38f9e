"""profile-svc settings: the shared service settings plus the two key rings it needs."""

from __future__ import annotations

from pydantic import Field, SecretStr

from mailwarden_runtime.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    """Environment: ``MW_CREDENTIAL_KEYS`` (profile secrets at rest), ``MW_TRANSIT_KEYS`` (secrets in events)."""

    credential_keys: SecretStr | None = Field(
        None, description="Key ring `kid:base64key,...` sealing profile credentials at rest; first seals."
    )
    transit_keys: SecretStr | None = Field(
        None, description="Key ring `kid:base64key,...` sealing profile credentials inside events."
    )
    http_port: int = Field(8001, ge=0, le=65535, description="Port of the HTTP API.")
