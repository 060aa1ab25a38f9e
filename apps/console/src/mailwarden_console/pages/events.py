"""``GET /events``: server-sent events for the open page, fed from the bus (see :mod:`..live`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from mailwarden_console.web import Signed

router = APIRouter()

HEARTBEAT_S = 15.0
STREAM_FOR_S = 300.0
"""A stream ends after this long and the browser reconnects: no connection outlives a stop for long."""


@router.get("/events")
async def events(ctx: Signed) -> StreamingResponse:
    hub, request = ctx.console.feed.hub, ctx.request

    async def stream() -> AsyncIterator[str]:
        async with hub.listen() as inbox:
            yield "retry: 2000\n\n"
            loop = asyncio.get_running_loop()
            until = loop.time() + STREAM_FOR_S
            while loop.time() < until and not await request.is_disconnected():
                try:
                    notice = await asyncio.wait_for(inbox.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if notice is None:
                    return
                yield notice.sse()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
