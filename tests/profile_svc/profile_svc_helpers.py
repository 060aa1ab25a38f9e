"""Helpers shared by the profile-svc tests (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from mailwarden_runtime.changes import unpublished

CANARY = "canary-Pa55w0rd-7f3e9b"


@dataclass
class Recorder:
    """Every message seen on profile and settings subjects, in arrival order."""

    messages: list[Msg] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, msg: Msg) -> None:
        self.messages.append(msg)
        self.arrived.set()

    def of(self, event_type: str) -> list[dict[str, Any]]:
        """Distinct events of ``event_type``: a relay that resumes re-publishes its last events with
        the same ids, which JetStream drops as duplicates but a core subscription sees again."""
        out: dict[str, dict[str, Any]] = {}
        for msg in self.messages:
            body = json.loads(msg.data)
            if body.get("type") == event_type:
                out.setdefault(body["id"], body)
        return list(out.values())

    async def wait_for(self, event_type: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(event_type)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.of(event_type)


def profile_body(name: str = "Contoso IMAP", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "owner": {"kind": "user", "id": "u1", "name": "Pat Owner", "email": "pat@example.com"},
        "incoming_protocol": "imap",
        "incoming": {"host": "imap.example.com", "port": 993, "tls": "implicit"},
    }
    body.update(overrides)
    return body


async def stream_bodies(js: Any, stream: str = "MW_CONFIG") -> list[bytes]:
    """Every message body kept in a JetStream stream, read one by one by sequence."""
    info = await js.stream_info(stream)
    bodies = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        bodies.append(msg.data or b"")
    return bodies


async def _pending(db: Any) -> int:
    return await unpublished(db, ("profiles", "settings"), "profile-svc-outbox")


async def outbox_drained(db: Any, timeout: float = 10.0) -> None:
    """Wait until the relay has published every pending event of profile-svc's collections."""
    async with asyncio.timeout(timeout):
        while True:
            if not await _pending(db):
                return
            await asyncio.sleep(0.05)  # the database offers nothing to wait on
