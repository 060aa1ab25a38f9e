"""The life of one synchronized mailbox: sync passes, IDLE or polling, failures and backoff.

A task per mailbox runs while this worker holds its lease. Each pass logs in, catches up and
either idles on the connection (IMAP with IDLE, a free host slot and IDLE on in the settings) or
logs out and sleeps the poll interval with jitter. A classified failure is recorded
(:class:`~sync_svc.episodes.Episodes`) and the next pass waits the backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.email import SyncProtocol
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.use_login import LoginSource
from mailwarden_runtime.bounded import honour_cancellation
from mailwarden_runtime.crypto import KeyRing
from sync_svc import metrics
from sync_svc.connect import NetEnv
from sync_svc.documents import SyncMode
from sync_svc.episodes import Episodes
from sync_svc.hosts import HostSlots
from sync_svc.publisher import Publisher
from sync_svc.store import Stores
from sync_svc.store.states import StateFields
from sync_svc.targets import SyncTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncOptions:
    fetch_batch: int
    max_message_bytes: int
    idle: bool
    idle_renew_s: float
    poll_jitter: float
    fetch_window: int = 2000
    first_window: int = 500


@dataclass(frozen=True)
class Services:
    """What every mailbox task shares (built once by the app)."""

    stores: Stores
    env: NetEnv
    keyring: KeyRing
    logins: LoginSource
    publisher: Publisher
    episodes: Episodes
    hosts: HostSlots
    options: SyncOptions


class MailboxSync:
    """Base of the IMAP and POP3 syncs: the loop around passes. Subclasses implement :meth:`pass_once`."""

    protocol: SyncProtocol

    def __init__(self, services: Services, target: SyncTarget, rng: random.Random | None = None) -> None:
        self.s = services
        self.target = target
        self.rng = rng or random.Random()
        self.step = "connect"
        self._no_episode = False
        """This task closed (or found no) error episode and none opened since: a pass that catches
        up need not read the state again to close one (one database read less per pass)."""

    async def login(self) -> Login:
        """Asked from mailbox-svc (kept until shortly before it expires), opened just now."""
        endpoint = self.target.endpoint
        return await self.s.logins.login(self.target.mailbox_id, endpoint.host, endpoint.port)

    async def pass_once(self) -> None:
        """Log in, catch up, and (IMAP) idle; returns when the connection is given up."""
        raise NotImplementedError

    def saw_episode(self, open_: bool) -> None:
        """The state just read says whether an error episode is open: no second read to close it."""
        self._no_episode = not open_

    async def caught_up(self, mode: SyncMode, left: StateFields | None = None, seen: int = 0) -> None:
        """A pass reached the server's present: close any error episode, note when and how, with
        what the pass left to write (``left``, its watermark, and ``seen`` messages to count) in
        the same write."""
        if not self._no_episode:
            await self.s.episodes.succeeded(self.target, self.protocol)
            self._no_episode = True
        fields: StateFields = {
            "last_sync_at": datetime.now(UTC),
            "mode": mode,
            "protocol": self.protocol,
            "last_error": None,
        }
        fields.update(left or {})
        await self.s.stores.states.update_state(
            self.target.mailbox_id, fields, {"messages_seen": seen} if seen else None
        )

    def poll_delay(self) -> float:
        return self.target.poll_interval_s * (1 + self.rng.uniform(0, self.s.options.poll_jitter))

    async def run(self) -> None:
        """Passes forever. A classified failure of the mailbox's server is recorded (an episode);
        anything else (our NATS or database away, a bug) is not the mailbox's fault: logged and
        retried after a backoff, never published as the mailbox's failure (it would re-test it).

        Every wait checks first whether the task was asked to stop: a library that swallowed the
        cancellation (``asyncio.wait_for`` on 3.11 when its future completes at the same moment, as
        under nats-py's request and pymongo's send) turns it into a result or a timeout, and the loop
        would otherwise go on for good while the worker waits for it to end."""
        interrupted = 0
        while True:
            honour_cancellation()
            self.step = "connect"
            started = time.monotonic()
            try:
                await self.pass_once()
                interrupted = 0
            except NetError as exc:
                interrupted = 0
                self._no_episode = False
                self.s.logins.forget(self.target.mailbox_id)  # new credentials may be waiting
                log.info(
                    "sync failed",
                    extra={"mailbox_id": self.target.mailbox_id, "code": exc.code.value, "step": self.step},
                )
                try:
                    honour_cancellation()
                    delay = await self.s.episodes.failed(
                        self.target, self.protocol, exc.code, self.step, exc.detail
                    )
                except Exception:
                    log.exception("sync failure not recorded", extra={"mailbox_id": self.target.mailbox_id})
                    delay = self.s.episodes.backoff_s(1)
                await self._wait(delay)
                continue
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                interrupted += 1
                log.warning(
                    "sync interrupted",
                    extra={
                        "mailbox_id": self.target.mailbox_id,
                        "error": type(exc).__name__,
                        "step": self.step,
                    },
                    exc_info=interrupted == 1,
                )
                await self._wait(self.s.episodes.backoff_s(interrupted))
                continue
            metrics.SYNC_SECONDS.labels(protocol=self.protocol).observe(time.monotonic() - started)
            await self._wait(self.poll_delay())

    @staticmethod
    async def _wait(delay_s: float) -> None:
        honour_cancellation()
        await asyncio.sleep(delay_s)
