"""A JetStream pull loop with back-pressure: it fetches only as many messages as it has free workers.

Why our own loop: a consumer that fetches ahead of its workers holds messages in memory that
nobody keeps alive; past the ack wait the server redelivers them (to this or another process)
while they still wait, so the same work is done twice. Here a message is fetched only when a
worker is free to start it at once, and from then on its handler keeps it alive.

Stopping is a drain: fetching stops, handlers in flight get ``grace_s`` to finish, and the ones
still running after that are cancelled, which gives their messages back to the server (``nak``)
for another process to take at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from mailwarden_runtime.bounded import cancel_and_wait, honour_cancellation, within

log = logging.getLogger(__name__)

MessageHandler = Callable[[Msg], Coroutine[Any, Any, None]]
BatchHandler = Callable[[list[Msg]], Coroutine[Any, Any, None]]

TOP_UP_WAIT_S = 0.05  # after the first message: take what is already there, do not wait for more

# The settings our consumers set that JetStream lets an existing consumer change.
UPDATABLE = ("ack_wait", "max_deliver", "max_ack_pending")
STOP_STEP_S = 2.0  # the most one part of a stop (cancelling the fetch, unsubscribing) may take

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class PullSpec:
    """Where to pull from and how much at once."""

    stream: str
    subject: str
    durable: str
    max_workers: int = 1
    batch_size: int = 1
    fetch_wait_s: float = 5.0


class PullWorkers:
    """Runs the messages of one durable pull consumer, at most ``max_workers`` tasks at once.

    Each message gets its own task (``handler``), or, with ``batch_handler``, each fetch of up to
    ``batch_size`` messages is one task: a handler that writes many results in one database
    round trip. A fetch waits for the first message, then takes only what is already there.
    """

    def __init__(
        self,
        spec: PullSpec,
        config: ConsumerConfig,
        handler: MessageHandler,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        if spec.max_workers < 1 or spec.batch_size < 1:
            raise ValueError("max_workers and batch_size must be at least 1")
        self.spec = spec
        self.config = config
        self.handler = handler
        self.batch_handler = batch_handler
        self._sub: JetStreamContext.PullSubscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._workers: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._workers)

    async def start(self, nc: Client) -> None:
        """Create (or update) the durable consumer, bind to it and start pulling."""
        js = nc.jetstream()
        await self._ensure_consumer(js)
        self._sub = await js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        self._loop_task = asyncio.create_task(self._pull_loop(js), name=f"pull-{self.spec.durable}")

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        """Create the durable consumer, or update a stored one to the code's settings.

        JetStream applies a create with the same name as an update where the change is editable
        (ack wait, max deliver, max ack pending, ...). Where it is not (e.g. the deliver policy) the
        stored consumer is kept and used, with a warning that says what to do.
        """
        config = dataclasses.replace(
            self.config,
            name=self.spec.durable,
            durable_name=self.spec.durable,
            filter_subject=self.spec.subject,
        )
        try:
            info = await js.add_consumer(self.spec.stream, config=config)
        except APIError as exc:
            log.warning(
                "the stored consumer differs from the code in a setting JetStream cannot change; "
                "keeping the stored one (delete the consumer while no process uses it to apply the code's)",
                extra={"consumer": self.spec.durable, "stream": self.spec.stream, "error": exc.description},
            )
            return
        stored = info.config
        differs = {
            key: (getattr(stored, key), getattr(config, key))
            for key in UPDATABLE
            if getattr(config, key) is not None and getattr(stored, key) != getattr(config, key)
        }
        if differs:
            log.warning(
                "the stored consumer keeps settings other than the code's",
                extra={"consumer": self.spec.durable, "stored_vs_code": differs},
            )

    async def _pull_loop(self, js: JetStreamContext) -> None:
        assert self._sub is not None
        pause = RETRY_FIRST_S
        while True:
            honour_cancellation()  # a fetch that swallowed our cancellation must not keep us looping
            while len(self._workers) >= self.spec.max_workers:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            if self.batch_handler is not None:
                want = self.spec.batch_size
            else:
                want = min(self.spec.batch_size, self.spec.max_workers - len(self._workers))
            try:
                msgs = await self._fetch(want)
            except TimeoutError:
                pause = RETRY_FIRST_S
                continue  # nothing to do for a while: ask again
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Reconnecting, or the consumer vanished (e.g. a stream re-created): back off, re-create.
                log.warning(
                    "pull failed, retrying",
                    extra={"consumer": self.spec.durable, "retry_in_s": pause, "error": repr(exc)},
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                with contextlib.suppress(Exception):
                    await self._ensure_consumer(js)
                continue
            pause = RETRY_FIRST_S
            if self.batch_handler is not None:
                self._spawn(self.batch_handler(msgs))
            else:
                for msg in msgs:
                    self._spawn(self.handler(msg))

    async def _fetch(self, want: int) -> list[Msg]:
        """The first message (waiting up to ``fetch_wait_s``), then up to ``want`` - 1 more if ready.

        One fetch of ``want`` would wait out its whole timeout for a full batch once the first
        message has arrived: a trickle of events would be held back seconds each.
        """
        assert self._sub is not None
        wait = self.spec.fetch_wait_s
        # Heartbeats from the server while the fetch waits: a dead consumer shows as an error, not
        # as a quiet stream (nats-server wants the heartbeat well inside the wait).
        heartbeat = wait / 4 if wait >= 2.0 else None
        msgs = await self._sub.fetch(1, timeout=wait, heartbeat=heartbeat)
        if want > 1:
            with contextlib.suppress(TimeoutError):
                msgs += await self._sub.fetch(want - 1, timeout=TOP_UP_WAIT_S)
        return msgs

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._workers.add(task)
        task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "message handler crashed", extra={"consumer": self.spec.durable}, exc_info=task.exception()
            )

    async def stop_pulling(self) -> None:
        """Fetch no more (idempotent): no message arrives after this that nobody would handle.

        Bounded: a fetch that ignores its cancellation, or an unsubscribe on a dead connection,
        is left behind after ``STOP_STEP_S``.
        """
        task, self._loop_task = self._loop_task, None
        await cancel_and_wait(task, STOP_STEP_S)
        sub, self._sub = self._sub, None
        if sub is not None:
            # No interest left: the server stops sending to this process's pending pull requests.
            await within(sub.unsubscribe(), STOP_STEP_S, f"unsubscribing {self.spec.durable}")

    async def stop(self, grace_s: float, cancel_wait_s: float = STOP_STEP_S) -> None:
        """Stop pulling, give handlers in flight ``grace_s`` to finish, then cancel (and so nak) the rest.

        Handlers cancelled get ``cancel_wait_s`` to give their messages back; one that does not end
        by then is left behind (its message comes back after the ack wait).
        """
        await self.stop_pulling()
        if not self._workers:
            return
        _, still_running = await asyncio.wait(set(self._workers), timeout=max(grace_s, 0.0))
        if still_running:
            log.warning(
                "handlers still running after the grace period; giving their messages back",
                extra={"consumer": self.spec.durable, "count": len(still_running)},
            )
            for task in still_running:
                task.cancel()
            _, left = await asyncio.wait(still_running, timeout=max(cancel_wait_s, 0.0))
            if left:
                log.warning(
                    "handlers did not end after their cancellation; left behind",
                    extra={"consumer": self.spec.durable, "count": len(left)},
                )
