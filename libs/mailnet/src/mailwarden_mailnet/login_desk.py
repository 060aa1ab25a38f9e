"""A stand-in for mailbox-svc's ``login`` operation, for tests and benchmarks that run no mailbox-svc.

It answers ``mailwarden.rpc.mailbox-svc.login`` the way mailbox-svc does: the service token is
checked, each service gets only its own direction, and the login is sealed with
:func:`~mailwarden_runtime.sealing.seal_for_use` to the purpose, mailbox, direction and the
endpoint's host and port, for ``ttl_s``. The real operation is covered by
tests/mailbox_svc/test_login_for_use.py and the end-to-end tests of sync-svc and sender-svc.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import SecretStr

from contracts.models import Endpoint
from mailwarden_mailnet.use_login import LOGIN_SUBJECT
from mailwarden_runtime.auth.errors import Unauthenticated
from mailwarden_runtime.auth.service_tokens import SERVICE_DIRECTIONS, verify_service_token
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.sealing import seal_for_use


class LoginDesk:
    """Answers mailbox-svc's ``login`` operation from ``logins`` and ``endpoints`` (by mailbox id)."""

    def __init__(self, ring: KeyRing, ttl_s: float = 120.0) -> None:
        self.ring = ring
        self.ttl_s = ttl_s
        self.logins: dict[str, tuple[str, str]] = {}
        """mailbox id → (username, password)."""
        self.endpoints: dict[str, Endpoint] = {}
        """mailbox id → the server the login is sealed to."""
        self.asked: list[tuple[str, str]] = []
        """(service, mailbox id) of every request, in order."""

    async def serve(self, nc: Client) -> None:
        await nc.subscribe(LOGIN_SUBJECT, cb=self.answer)

    async def answer(self, msg: Msg) -> None:
        await msg.respond(json.dumps(self.reply(msg)).encode())

    def reply(self, msg: Msg) -> dict[str, Any]:
        auth = (msg.headers or {}).get("Authorization", "")
        try:
            who = verify_service_token(self.ring, auth.removeprefix("Bearer ").strip())
        except Unauthenticated:
            return {"ok": False, "status": 401, "detail": "not authenticated", "errors": []}
        req = json.loads(msg.data)
        service = who.subject.removeprefix("service:")
        self.asked.append((service, req["mailbox_id"]))
        if SERVICE_DIRECTIONS.get(service) != req["direction"]:
            return {"ok": False, "status": 403, "detail": "not this direction", "errors": []}
        login, endpoint = self.logins.get(req["mailbox_id"]), self.endpoints.get(req["mailbox_id"])
        if login is None or endpoint is None:
            detail = f"the mailbox has no {req['direction']} login"
            return {"ok": False, "status": 409, "detail": detail, "errors": []}
        not_after = datetime.now(UTC) + timedelta(seconds=self.ttl_s)
        sealed = seal_for_use(
            self.ring,
            login[0],
            SecretStr(login[1]),
            purpose=req["purpose"],
            mailbox_id=req["mailbox_id"],
            direction=req["direction"],
            host=endpoint.host,
            port=endpoint.port,
            not_after=not_after,
        )
        result = {
            "mailbox_id": req["mailbox_id"],
            "direction": req["direction"],
            "purpose": req["purpose"],
            "host": endpoint.host,
            "port": endpoint.port,
            "not_after": not_after.replace(microsecond=0).isoformat(),
            "sealed": sealed.model_dump(mode="json"),
        }
        return {"ok": True, "result": result}
