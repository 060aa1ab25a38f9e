"""JetStream publishes whose acks come back to one inbox, awaited later (a batch at a time).

nats-py's ``publish_async`` costs, per message, a semaphore wait under ``wait_for``, a random
reply token from ``secrets`` (a system call) and a ``PubAck`` built from the reply's JSON; at a
few thousand messages a second that was a tenth of sync-svc's CPU. Here the reply subject is the
inbox and a counter, and a reply is only looked into when it reports an error. The future of a
publish whose reply never comes (lost in a reconnect) never resolves: await it under a deadline,
and cancel what is left (that frees its entry).
"""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NoStreamResponseError

STATUS = "Status"
NO_RESPONDERS = "503"


class AckInbox:
    """One connection's inbox for JetStream acks; :meth:`publish` returns the ack as a future."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._count = 0
        self._sub: Subscription | None = None

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[None]:
        """Send ``payload`` to JetStream; the future resolves when the stream stored it (raises
        the server's error, or NoStreamResponseError when no stream takes the subject)."""
        if self._sub is None:
            self._sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._reply)
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _: self._futures.pop(token, None))
        await self.nc.publish(subject, payload, reply=f"{self.prefix}.{token}", headers=headers)
        return future

    @property
    def pending(self) -> int:
        return len(self._futures)

    async def _reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject[len(self.prefix) + 1 :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(STATUS) == NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
        elif b'"error"' in msg.data:
            try:
                APIError.from_error(json.loads(msg.data)["error"])  # raises the matching error
                future.set_exception(APIError(description="unreadable JetStream error"))
            except APIError as exc:
                future.set_exception(exc)
            except (ValueError, KeyError, TypeError):
                future.set_exception(APIError(description="unreadable JetStream error"))
        else:
            future.set_result(None)
