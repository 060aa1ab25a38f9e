"""A watched local copy of the breaker bucket, so a test's breaker check reads memory, not KV.

Every test asked KV for its (host, user) record before each login: two reads per test, each a
round trip and a JetStream direct get, for a bucket that is nearly always empty (a record exists
only after a definite auth failure). The copy follows the bucket with an ordered consumer (last
value per key, then every change), and this tester's own writes go into it at once.

It is trusted only while it can be: connected, its first values all delivered, and its consumer
confirmed to exist within ``confirm_s`` (one consumer-info request per ``confirm_s`` instead of a
read per test). Otherwise :meth:`BreakerView.lookup` answers None and the caller reads KV as
before (and falls back to the local breaker when KV does not answer). A lost bucket or consumer, a
NATS restart or a reconnect restarts the watch.

What another tester wrote reaches the copy a delivery later (milliseconds). The store
(:class:`tester_svc.shared_limits.BreakerStore`) takes only an absent record from the copy and
reads KV when the copy holds one, so a clear is never missed (no login refused on a stale record);
a failure written elsewhere in the last milliseconds may let one more login try, the same race a
read per test had between its read and the login.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

log = logging.getLogger(__name__)

CONFIRM_S = 1.0
_KV_OP = "KV-Operation"
_MARKER = "Nats-Marker-Reason"


@dataclass(frozen=True)
class _Value:
    revision: int
    raw: bytes  # b"": deleted, purged or expired


class BreakerView:
    """The bucket's current values by key, with the revision KV holds them at."""

    def __init__(
        self,
        connection: Callable[[], Client | None],
        bucket: str,
        *,
        confirm_s: float = CONFIRM_S,
        open_bucket: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connection = connection
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self.confirm_s = confirm_s
        self._open_bucket = open_bucket  # opens the bucket afresh, re-creating it if it was lost
        self._clock = clock
        self._values: dict[str, _Value] = {}
        self._sub: JetStreamContext.PushSubscription | None = None
        self._client: Client | None = None
        self._reconnects = -1
        self._ready = False
        self._confirmed_at = -1.0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # --- reading ------------------------------------------------------------------------------
    def lookup(self, key: str) -> tuple[int, bytes] | None:
        """``(revision, value)`` as :meth:`SharedKv.read` answers it, or None when the copy is not
        trusted now (the caller reads KV)."""
        if not self.current:
            return None
        value = self._values.get(key)
        return (0, b"") if value is None else (value.revision, value.raw)

    @property
    def current(self) -> bool:
        nc = self._client
        return (
            self._ready
            and nc is not None
            and nc.is_connected
            and nc.stats["reconnects"] == self._reconnects
            and self._clock() - self._confirmed_at <= self.confirm_s * 2
        )

    # --- this tester's own writes ---------------------------------------------------------------
    def wrote(self, key: str, revision: int, raw: bytes) -> None:
        """A write of ours that KV accepted at ``revision``: in the copy before its delivery."""
        self._apply(key, revision, raw)

    def deleted(self, key: str) -> None:
        """A delete of ours (its revision is not returned): the key reads empty from now on; the
        delete marker's delivery, or a later write by anyone, has a higher revision and replaces it."""
        known = self._values.get(key)
        self._values[key] = _Value(known.revision if known else 0, b"")

    def _apply(self, key: str, revision: int, raw: bytes) -> None:
        known = self._values.get(key)
        if known is not None and known.revision >= revision:
            return  # an older delivery than what we already hold (our own write came first)
        self._values[key] = _Value(revision, raw)

    # --- the watch ----------------------------------------------------------------------------
    def start(self) -> None:
        """Keep the copy current in the background until :meth:`stop`."""
        if self._task is None:
            self._stopped = False
            self._task = asyncio.create_task(self._keep(), name=f"watch {self.bucket}")

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._unsubscribe()

    async def _keep(self) -> None:
        while not self._stopped:
            try:
                if self._sub is None or not self._watching():
                    await self._restart()
                else:
                    await self._confirm()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, bucket lost: reads go to KV until the next try
                self._ready = False
                log.debug("breaker watch not current: %r", exc)
                await self._unsubscribe()
            await asyncio.sleep(self.confirm_s / 2)

    def _watching(self) -> bool:
        nc = self._connection()
        return (
            nc is not None
            and nc is self._client
            and nc.is_connected
            and (nc.stats["reconnects"] == self._reconnects)
        )

    async def _confirm(self) -> None:
        assert self._sub is not None
        async with asyncio.timeout(self.confirm_s):
            await self._sub.consumer_info()
        self._confirmed_at = self._clock()

    async def _restart(self) -> None:
        await self._unsubscribe()
        nc = self._connection()
        if nc is None or not nc.is_connected:
            return
        if self._open_bucket is not None:
            await self._open_bucket()
        self._ready = False
        self._values = {}
        self._client = nc
        self._reconnects = nc.stats["reconnects"]
        js = nc.jetstream()
        async with asyncio.timeout(self.confirm_s * 5):
            self._sub = await js.subscribe(
                f"{self._prefix}>",
                stream=self.stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                cb=self._on_message,
            )
            info = await self._sub.consumer_info()
        delivered = info.delivered.stream_seq if info.delivered is not None else 0
        if info.num_pending == 0 and not delivered:
            self._ready = True  # an empty bucket; else the delivery with nothing pending after it
        self._confirmed_at = self._clock()
        log.info("breaker watch started", extra={"bucket": self.bucket, "keys": len(self._values)})

    async def _on_message(self, msg: Msg) -> None:
        meta = msg.metadata
        headers = msg.headers or {}
        removed = _KV_OP in headers or _MARKER in headers
        self._apply(msg.subject[len(self._prefix) :], meta.sequence.stream, b"" if removed else msg.data)
        if meta.num_pending == 0:
            self._ready = True

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        self._ready = False
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection is gone: nothing arrives anyway
                await sub.unsubscribe()
