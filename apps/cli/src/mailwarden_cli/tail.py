"""Follow a subject: a core subscription (live only) or, with --since/--last, an ordered JetStream consumer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import typer
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from mailwarden_cli.client import Bus, CliError

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None) -> datetime | None:
    """``30s``, ``10m``, ``2h``, ``1d`` ago, or an ISO 8601 time (UTC when no offset is given)."""
    if text is None:
        return None
    span = _SPAN.match(text.strip())
    if span:
        return datetime.now(UTC) - timedelta(seconds=float(span.group(1)) * _UNIT_S[span.group(2)])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter("a span like 10m, 2h, 1d or an ISO time", param_hint="--since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def _subscribe(
    bus: Bus, subject: str, since: datetime | None, replay: bool, cb: Callable[[Msg], object]
) -> Subscription:
    async def handler(msg: Msg) -> None:
        cb(msg)

    if since is None and not replay:
        sub = await bus.nc.subscribe(subject, cb=handler)
        await bus.nc.flush()
        return sub
    js = bus.nc.jetstream(timeout=bus.options.timeout)
    try:
        stream = await js.find_stream_name_by_subject(subject)
    except NotFoundError:
        raise CliError([f"no JetStream stream keeps {subject}: --since and --last need one"]) from None
    config = ConsumerConfig(opt_start_time=since) if since else None
    policy = DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL
    return await js.subscribe(
        subject, stream=stream, ordered_consumer=True, deliver_policy=policy, config=config, cb=handler
    )


async def follow(
    bus: Bus,
    subject: str,
    handle: Callable[[Msg], None],
    *,
    since: datetime | None = None,
    last: int | None = None,
    count: int | None = None,
) -> int:
    """Hand each message to ``handle`` until ``count`` were shown (forever without); returns how many."""
    queue: asyncio.Queue[Msg] = asyncio.Queue()
    sub = await _subscribe(bus, subject, since, last is not None, queue.put_nowait)
    shown = 0
    try:
        while count is None or shown < count:
            msg = await _next(bus, queue)
            if last is not None and since is None and msg.metadata.num_pending >= last:
                continue  # older than the last N kept for this subject
            handle(msg)
            shown += 1
    finally:
        if not bus.closed.is_set():
            await sub.unsubscribe()
    return shown


async def _next(bus: Bus, queue: asyncio.Queue[Msg]) -> Msg:
    """The next message, or :meth:`Bus.lost` once the connection is gone (it does not come back)."""
    getter = asyncio.ensure_future(queue.get())
    closed = asyncio.ensure_future(bus.closed.wait())
    await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    if getter.done():
        return getter.result()
    getter.cancel()
    raise bus.lost()
