"""The two key rings of mailbox-svc: credentials at rest, and credentials on the bus."""

from __future__ import annotations

from dataclasses import dataclass

from mailbox_svc.config import Settings
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.keys import load_keyring

AT_REST_PURPOSE = "mailbox-credential"
"""The dev-mode built-in at-rest key is derived from this: another key than profile-svc's."""


@dataclass(frozen=True)
class KeyRings:
    at_rest: KeyRing
    transit: KeyRing

    @classmethod
    def load(cls, settings: Settings) -> KeyRings:
        return cls(
            at_rest=load_keyring(
                settings.credential_keys, "MW_MAILBOX_CREDENTIAL_KEYS", AT_REST_PURPOSE, settings.dev_mode
            ),
            transit=load_keyring(settings.transit_keys, "MW_TRANSIT_KEYS", "transit", settings.dev_mode),
        )
