"""profile-svc settings: the shared service settings plus the two key rings it needs."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mailwarden_runtime.settings import ServiceSettings


class ProfileSettings(ServiceSettings):
    """Environment: ``MW_PROFILE_CREDENTIAL_KEYS`` (profile secrets at rest), ``MW_TRANSIT_KEYS`` (secrets in events)."""

    model_config = SettingsConfigDict(populate_by_name=True)  # credential_keys= as well as its env names

    credential_keys: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("MW_PROFILE_CREDENTIAL_KEYS", "MW_CREDENTIAL_KEYS"),
        description=(
            "Key ring `kid:base64key,...` sealing profile credentials at rest (profile-svc's own); first "
            "seals. `MW_CREDENTIAL_KEYS`, shared with mailbox-svc before, is read when it is unset."
        ),
    )
    transit_keys: SecretStr | None = Field(
        None, description="Key ring `kid:base64key,...` sealing profile credentials inside events."
    )
    http_port: int = Field(8001, ge=0, le=65535, description="Port of the HTTP API.")
