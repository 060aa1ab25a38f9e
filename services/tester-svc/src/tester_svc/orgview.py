"""The organisation's allowed ports as this tester sees them, from ``mailwarden.settings.changed``.

A TestRequested names the ports it may use, but whoever can publish a request could widen them:
the tester follows the settings events itself (an ordered consumer from the last one kept in
MW_CONFIG) and uses its own view, never the request's. When it has seen none (none kept: the
stream holds 14 days) it asks profile-svc (``settings_get``, with its service token) before the
first test runs; while neither has answered, tests wait (the request is redelivered later) and no
port is allowed.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy
from pydantic import BaseModel

from contracts.envelope import EnvelopeError, parse_envelope
from contracts.events import EmailSettingsChanged
from contracts.models import Port
from tester_svc.jobgate import Ask

log = logging.getLogger(__name__)
STREAM = "MW_CONFIG"
SETTINGS_GET = "mailwarden.rpc.profile-svc.settings_get"


class SettingsUnknown(Exception):
    """No settings seen and profile-svc did not tell them: the test is not run now (redelivered)."""


class _PortsReply(BaseModel):
    """What this view needs of profile-svc's settings (the rest of them is not its business)."""

    version: int
    allowed_ports: list[Port]


class OrgPorts:
    def __init__(self, ask: Ask, timeout_s: float = 2.0) -> None:
        self.ask = ask
        self.timeout_s = timeout_s
        self.ports: tuple[int, ...] | None = None
        self.version = -1
        self._sub: Subscription | None = None
        self._lock = asyncio.Lock()

    async def start(self, nc: Client) -> None:
        self._sub = await nc.jetstream().subscribe(
            EmailSettingsChanged.SUBJECT,
            stream=STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            cb=self._on_settings,
        )

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is gone: nothing arrives anyway
                log.debug("settings view unsubscribe failed: %r", exc)

    async def _on_settings(self, msg: Msg) -> None:
        try:
            settings = parse_envelope(msg.data, EmailSettingsChanged).data.settings
        except EnvelopeError:
            return  # mailbox-svc and alert-svc dead-letter it; this view only ignores it
        self._apply(settings.version, settings.allowed_ports)

    def _apply(self, version: int, ports: list[int]) -> None:
        if version >= self.version:
            self.version = version
            self.ports = tuple(ports)

    async def ready(self) -> None:
        """Make sure the view holds the org's ports: asks profile-svc once when no event came."""
        if self.ports is not None:
            return
        async with self._lock:  # tests arriving together ask once
            if self.ports is not None:
                return
            try:
                raw = await self.ask(SETTINGS_GET, b"{}", self.timeout_s)
                reply = json.loads(raw)
                if not reply.get("ok"):
                    raise SettingsUnknown(f"profile-svc refused: {reply.get('status')}")
                told = _PortsReply.model_validate(reply["result"])
            except SettingsUnknown:
                raise
            except Exception as exc:  # no responders, timeout, garbage (ValidationError too)
                raise SettingsUnknown(
                    f"profile-svc did not tell the settings: {type(exc).__name__}"
                ) from None
            self._apply(told.version, told.allowed_ports)
            log.info("org settings loaded from profile-svc", extra={"version": told.version})

    def allowed(self, requested: list[int]) -> list[int]:
        """The ports a test may use: this tester's view of the settings, never the request's
        (``requested`` is ignored; none at all while the view is empty: fail closed)."""
        del requested
        return list(self.ports) if self.ports is not None else []
