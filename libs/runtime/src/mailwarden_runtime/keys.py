"""Loading key rings from settings, refusing to run without one outside dev mode."""

from __future__ import annotations

import logging

from pydantic import SecretStr

from mailwarden_runtime.crypto import KeyRing

log = logging.getLogger(__name__)


class MissingKeyError(RuntimeError):
    pass


def load_keyring(secret: SecretStr | None, env_name: str, purpose: str, dev_mode: bool) -> KeyRing:
    if secret is not None and secret.get_secret_value().strip():
        return KeyRing.parse(secret.get_secret_value())
    if dev_mode:
        log.warning("using the built-in development key", extra={"purpose": purpose})
        return KeyRing.for_development(purpose)
    raise MissingKeyError(
        f"{env_name} is not set: refusing to start without a {purpose} key "
        f"(set {env_name}=kid:base64key, or MW_DEV_MODE=true for development only)"
    )
