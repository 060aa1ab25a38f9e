"""mailbox-svc settings (env prefix ``MW_``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mailwarden_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(populate_by_name=True)  # credential_keys= as well as its env names

    credential_keys: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("MW_MAILBOX_CREDENTIAL_KEYS", "MW_CREDENTIAL_KEYS"),
        description=(
            "Key ring `kid:base64key,...` for mailbox credentials at rest (mailbox-svc's own); the first "
            "key seals. `MW_CREDENTIAL_KEYS`, shared with profile-svc before, is read when it is unset."
        ),
    )
    transit_keys: SecretStr | None = Field(
        None, description="Key ring for credentials in TestRequested (tester-svc opens them)."
    )
    transit_ttl_s: float = Field(
        3600.0,
        ge=60,
        le=86_400,
        description="How long a login sealed for one test opens at the tester (a captured blob expires).",
    )
    login_ttl_s: float = Field(
        300.0,
        ge=10,
        le=3600,
        description="How long a login sealed for sync-svc or sender-svc opens (they ask again before).",
    )
    retry_max_attempts: int = Field(
        10, ge=1, le=100, description="Test attempts before a transient error disables."
    )
    retry_interval_s: float = Field(300.0, gt=0, description="Delay between retries of a transient failure.")
    retry_jitter: float = Field(
        0.1, ge=0, le=1, description="Random spread of each retry delay, as a fraction of the interval."
    )
    result_watchdog_s: float = Field(
        600.0,
        gt=0,
        description=(
            "How long after a mailbox's test is requested the retry loop looks for its stored result, "
            "in case the result's handler gave up (a database outage longer than the consumer's ~4 min "
            "of retries): longer than a test plus that budget. A result applied before never waits."
        ),
    )
    result_watchdog_resends: int = Field(
        2,
        ge=0,
        le=10,
        description=(
            "How often the watchdog sends a requested test again (same test id) when it finds no stored "
            "result; after that the test fails with `no_result` (transient: the retry policy applies)."
        ),
    )
    scheduler_poll_s: float = Field(
        5.0, gt=0, description="How often due retries and open jobs are picked up."
    )
    job_batch_size: int = Field(100, ge=1, le=1000, description="Mailboxes requested per job batch.")
    job_max_in_flight: int = Field(
        500, ge=1, description="Tests of one job awaiting a result before the job stops expanding."
    )
    max_selection: int = Field(
        1000, ge=1, description="Most mailboxes one synchronous bulk operation may touch (more: use a job)."
    )
