"""A mailbox's login for sync-svc (``sync``, incoming) or sender-svc (``send``, outgoing).

Asked from mailbox-svc's ``login`` operation with the service's own token; the answer is sealed to
the purpose, mailbox, direction, host and port until ``not_after``. It is kept until shortly before
then and opened (:func:`~mailwarden_runtime.sealing.open_for_use`) at each use. A refusal about the
mailbox's login is a classified :class:`NetError` (the mailbox's problem); mailbox-svc not answering
is :class:`LoginUnavailable` (ours: retried, never blamed on the mailbox).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.errors import ErrorCode
from contracts.models import SealedSecret
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.login import Login, checked_login
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.sealing import SealExpired, open_for_use

LOGIN_SUBJECT = "mailwarden.rpc.mailbox-svc.login"

Ask = Callable[[str, bytes, float], Awaitable[bytes]]
"""Sends one NATS request (subject, body, timeout) with the service token header; the reply body."""


class LoginUnavailable(Exception):
    """mailbox-svc did not answer, or answered something that is not about the mailbox's login
    (``status``: its refusal's status, e.g. 403 when this service may not have that login)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Held:
    sealed: SealedSecret
    host: str
    port: int
    not_after: datetime
    fresh_until: float


class LoginSource:
    """Asks mailbox-svc for logins of one purpose and direction, keeping each until shortly before it expires."""

    def __init__(
        self,
        ask: Ask,
        ring: KeyRing,
        *,
        purpose: str,
        direction: str,
        timeout_s: float = 5.0,
        margin_s: float = 30.0,
    ) -> None:
        self.ask = ask
        self.ring = ring
        self.purpose = purpose
        self.direction = direction
        self.timeout_s = timeout_s
        self.margin_s = margin_s
        self._held: dict[str, _Held] = {}

    def forget(self, mailbox_id: str) -> None:
        """Ask again next time (e.g. after the server refused the login)."""
        self._held.pop(mailbox_id, None)

    async def login(self, mailbox_id: str, host: str, port: int) -> Login:
        """The opened login for ``mailbox_id`` at ``host:port``; NetError when there is none usable."""
        held = self._held.get(mailbox_id)
        if held is None or time.monotonic() >= held.fresh_until:
            held = await self._fetch(mailbox_id)
            self._held[mailbox_id] = held
        if (held.host.lower().rstrip("."), held.port) != (host.lower().rstrip("."), port):
            self.forget(mailbox_id)
            raise NetError(
                ErrorCode.CREDENTIALS_UNREADABLE,
                "credentials_redirected: the login is for another server than the profile names here",
            )
        try:
            plain = open_for_use(
                self.ring,
                held.sealed,
                purpose=self.purpose,
                mailbox_id=mailbox_id,
                direction=self.direction,
                host=held.host,
                port=held.port,
            )
        except SealExpired:
            self.forget(mailbox_id)
            raise NetError(ErrorCode.CREDENTIALS_UNREADABLE, "the sealed login has expired") from None
        except SealError:
            self.forget(mailbox_id)
            raise NetError(ErrorCode.CREDENTIALS_UNREADABLE, "the login does not open") from None
        return checked_login(plain)

    async def _fetch(self, mailbox_id: str) -> _Held:
        body = json.dumps({"mailbox_id": mailbox_id, "direction": self.direction, "purpose": self.purpose})
        try:
            raw = await self.ask(LOGIN_SUBJECT, body.encode(), self.timeout_s)
            reply: dict[str, Any] = json.loads(raw)
        except Exception as exc:  # a timeout, no responder, a broken reply: not the mailbox's fault
            raise LoginUnavailable(f"mailbox-svc did not answer: {type(exc).__name__}") from None
        if not reply.get("ok"):
            raise _refusal(reply)
        try:
            result = reply["result"]
            sealed = SealedSecret.model_validate(result["sealed"])
            not_after = datetime.fromisoformat(str(result["not_after"]))
            host, port = str(result["host"]), int(result["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LoginUnavailable(f"mailbox-svc answered no login: {type(exc).__name__}") from None
        if not_after.tzinfo is None:
            not_after = not_after.replace(tzinfo=UTC)
        left = (not_after - datetime.now(UTC)).total_seconds()
        fresh_until = time.monotonic() + max(0.0, left - min(self.margin_s, left / 2))
        return _Held(sealed, host, port, not_after, fresh_until)


def _refusal(reply: dict[str, Any]) -> Exception:
    status = reply.get("status")
    detail = str(reply.get("detail") or "")[:200]
    if status in (404, 409):
        if "changed since the password was entered" in detail or "credentials_redirected" in detail:
            return NetError(ErrorCode.CREDENTIALS_UNREADABLE, f"credentials_redirected: {detail}")
        if "cannot be read" in detail:
            return NetError(ErrorCode.CREDENTIALS_UNREADABLE, detail)
        return NetError(ErrorCode.CREDENTIALS_MISSING, detail or "mailbox-svc has no login for the mailbox")
    return LoginUnavailable(
        f"mailbox-svc refused the login request ({status}): {detail}",
        status if isinstance(status, int) else None,
    )
