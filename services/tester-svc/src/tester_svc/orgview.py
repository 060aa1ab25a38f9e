"""The organisation's allowed ports as this tester sees them, from ``mailwarden.settings.changed``.

A TestRequested names the ports it may use, but whoever can publish a request could widen them:
the tester follows the settings events itself (an ordered consumer from the last one kept in
MW_CONFIG) and uses its own view. Until it has seen one (none kept: the stream holds 14 days) it
falls back to the request's list, and says so once.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy

from contracts.envelope import EnvelopeError, parse_envelope
from contracts.events import EmailSettingsChanged

log = logging.getLogger(__name__)
STREAM = "MW_CONFIG"


class OrgPorts:
    def __init__(self) -> None:
        self.ports: tuple[int, ...] | None = None
        self.version = -1
        self._sub: Subscription | None = None
        self._warned = False

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
        if settings.version >= self.version:
            self.version = settings.version
            self.ports = tuple(settings.allowed_ports)

    def allowed(self, requested: list[int]) -> list[int]:
        """The ports a test may use: this tester's view of the settings, not the request's."""
        if self.ports is None:
            if not self._warned:
                log.warning("no org settings seen yet: using the ports the test request names")
                self._warned = True
            return list(requested)
        return list(self.ports)
