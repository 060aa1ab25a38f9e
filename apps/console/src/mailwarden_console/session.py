"""The signed-in user's session: the bearer token, sealed into an HttpOnly, SameSite=Strict cookie.

The token never reaches the page: the cookie is AES-256-GCM sealed with the console's own key ring
(authenticated and encrypted, so it can be neither read nor forged by the browser), and the console
forwards the token as ``Authorization: Bearer ...`` on every call to a service. No state is kept on
the server, so any console replica can serve any request.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass

from pydantic import ValidationError

from contracts.models import SealedSecret
from mailwarden_runtime.crypto import KeyRing, SealError

COOKIE = "mw_console"
_AAD = "console-session"


@dataclass(frozen=True)
class Session:
    token: str
    method: str
    """How the user signed in: ``token`` (an API token) today; ``oidc`` when that login exists."""
    csrf: str
    """Sent with every form, checked on every change (a second guard besides SameSite=Strict)."""
    issued_at: float

    @classmethod
    def start(cls, token: str, method: str = "token") -> Session:
        return cls(token=token, method=method, csrf=secrets.token_urlsafe(24), issued_at=time.time())

    @property
    def label(self) -> str:
        """What the page may show of the token: its last four characters, never more."""
        return f"{self.method} …{self.token[-4:]}" if len(self.token) >= 12 else self.method


class SessionCodec:
    """Seals a session into a cookie value and opens it again (expired or tampered: no session)."""

    def __init__(self, ring: KeyRing, max_age_s: int) -> None:
        self._ring = ring
        self._max_age_s = max_age_s

    @property
    def max_age_s(self) -> int:
        return self._max_age_s

    def seal(self, session: Session) -> str:
        sealed = self._ring.seal(json.dumps(asdict(session)).encode(), _AAD)
        return f"{sealed.kid}.{sealed.nonce}.{sealed.ct}"

    def open(self, value: str | None) -> Session | None:
        if not value or value.count(".") != 2:
            return None
        kid, nonce, ct = value.split(".")
        try:
            raw = self._ring.open(SealedSecret(kid=kid, nonce=nonce, ct=ct), _AAD)
            session = Session(**json.loads(raw))
        except (SealError, ValidationError, ValueError, TypeError):
            return None
        if time.time() - session.issued_at > self._max_age_s:
            return None
        return session
