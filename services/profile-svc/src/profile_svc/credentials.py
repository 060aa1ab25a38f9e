"""Profile credentials: sealed at rest with the credential ring, re-sealed with the transit ring for events.

Both seals bind the ciphertext to ``profile:<id>:<direction>``, so a ciphertext copied onto another
profile or direction does not open. The plaintext is JSON ``{"username", "password"}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from contracts.events import SealedCredentials
from contracts.models import Direction, Password, SealedSecret
from mailwarden_runtime.crypto import KeyRing

AT_REST_PURPOSE = "profile-credential"
"""The dev-mode built-in at-rest key is derived from this: another key than mailbox-svc's."""


class Login(BaseModel):
    """A user name and password as the API receives them; the password never leaves as plaintext."""

    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    password: Password


def aad(profile_id: str, direction: Direction) -> str:
    return f"profile:{profile_id}:{direction.value}"


@dataclass(frozen=True)
class CredentialBox:
    """Seals and re-seals profile logins; the only place that sees a profile password in clear."""

    at_rest: KeyRing
    transit: KeyRing

    def seal(self, profile_id: str, direction: Direction, login: Login) -> SealedSecret:
        plain = json.dumps({"username": login.username, "password": login.password.get_secret_value()})
        return self.at_rest.seal(plain.encode(), aad(profile_id, direction))

    def open(self, profile_id: str, direction: Direction, sealed: SealedSecret) -> bytes:
        return self.at_rest.open(sealed, aad(profile_id, direction))

    def for_transit(
        self, profile_id: str, stored: dict[Direction, SealedSecret], use_same: bool
    ) -> SealedCredentials | None:
        """The stored logins re-sealed with the transit ring for an event, one per direction.

        With "use same settings for outgoing" the incoming login serves both directions.
        """
        if not stored:
            return None
        sources = dict(stored)
        if use_same and Direction.INCOMING in sources:
            sources[Direction.OUTGOING] = sources[Direction.INCOMING]
        sealed = {}
        for direction in (Direction.INCOMING, Direction.OUTGOING):
            source = sources.get(direction)
            if source is None:
                continue
            origin = Direction.INCOMING if use_same else direction
            plain = self.at_rest.open(source, aad(profile_id, origin))
            sealed[direction.value] = self.transit.seal(plain, aad(profile_id, direction))
        return SealedCredentials.model_validate(sealed)
