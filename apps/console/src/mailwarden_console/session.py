"""The signed-in user's session: the bearer token, sealed into an HttpOnly, SameSite=Strict cookie.

It also keeps who the token stands for (subject, roles, each permission and its scope, from
mailbox-svc's ``whoami`` at sign-in): a token's roles do not change while it lives, so the pages
follow them without asking again. They only decide what is shown; each service checks every call.

The token never reaches the page: the cookie is AES-256-GCM sealed with the console's own key ring
(authenticated and encrypted, so it can be neither read nor forged by the browser), and the console
forwards the token as ``Authorization: Bearer ...`` on every call to a service. No state is kept on
the server, so any console replica can serve any request.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from contracts.models import SealedSecret
from mailwarden_runtime.crypto import KeyRing, SealError

COOKIE = "mw_console"
_AAD = "console-session"


@dataclass(frozen=True)
class Session:
    token: str
    method: str
    """How the user signed in: ``token`` (an API token) or ``oidc`` (the identity provider)."""
    csrf: str
    """Sent with every form, checked on every change (a second guard besides SameSite=Strict)."""
    issued_at: float
    subject: str = ""
    roles: list[str] = field(default_factory=list)
    permissions: dict[str, str] = field(default_factory=dict)
    """Each permission held and its scope, ``all`` or ``own`` (``whoami``)."""
    expires_at: float | None = None
    """When the token itself expires (an OIDC access token's ``expires_in``): the session ends then."""

    @classmethod
    def start(
        cls,
        token: str,
        method: str = "token",
        identity: dict[str, Any] | None = None,
        expires_at: float | None = None,
    ) -> Session:
        who = identity or {}
        return cls(
            token=token,
            method=method,
            csrf=secrets.token_urlsafe(24),
            issued_at=time.time(),
            subject=str(who.get("subject", "")),
            roles=[str(r) for r in who.get("roles", [])],
            permissions={str(k): str(v) for k, v in (who.get("permissions") or {}).items()},
            expires_at=expires_at,
        )

    def may(self, permission: str, everything: bool = False) -> bool:
        """Holds ``permission`` (on everything, with ``everything``; else on their own things too)."""
        scope = self.permissions.get(permission)
        return scope == "all" if everything else scope is not None

    def only_own(self, permission: str) -> bool:
        """Holds ``permission`` on their own things only (a mailbox owner's mailboxes and wall)."""
        return self.permissions.get(permission) == "own"

    @property
    def own_wall(self) -> str:
        """The query of their own alerts wall (``user:<subject>``)."""
        return f"recipient_kind=user&recipient_id={self.subject}"

    @property
    def label(self) -> str:
        """Who is signed in, and how: the token's last four characters at most, never more."""
        how = f"{self.method} …{self.token[-4:]}" if len(self.token) >= 12 else self.method
        roles = ", ".join(r.replace("_", " ") for r in self.roles) or "no role"
        return f"{self.subject} ({roles}) · {how}" if self.subject else how


class SessionCodec:
    """Seals a session into a cookie value and opens it again (expired or tampered: no session)."""

    def __init__(self, ring: KeyRing, max_age_s: int) -> None:
        self._ring = ring
        self._max_age_s = max_age_s

    @property
    def max_age_s(self) -> int:
        return self._max_age_s

    def seal(self, session: Session) -> str:
        return self.seal_data(asdict(session), _AAD)

    def open(self, value: str | None) -> Session | None:
        data = self.open_data(value, _AAD)
        if data is None:
            return None
        try:
            session = Session(**data)
        except (ValidationError, ValueError, TypeError):
            return None
        now = time.time()
        if now - session.issued_at > self._max_age_s:
            return None
        if session.expires_at is not None and now >= session.expires_at:
            return None
        return session

    def seal_data(self, data: dict[str, Any], aad: str) -> str:
        """Any small JSON object sealed for a cookie (``aad`` keeps each kind of cookie apart)."""
        sealed = self._ring.seal(json.dumps(data).encode(), aad)
        return f"{sealed.kid}.{sealed.nonce}.{sealed.ct}"

    def open_data(self, value: str | None, aad: str) -> dict[str, Any] | None:
        if not value or value.count(".") != 2:
            return None
        kid, nonce, ct = value.split(".")
        try:
            data = json.loads(self._ring.open(SealedSecret(kid=kid, nonce=nonce, ct=ct), aad))
        except (SealError, ValidationError, ValueError, TypeError):
            return None
        return data if isinstance(data, dict) else None
