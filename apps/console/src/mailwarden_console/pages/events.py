"""``GET /events``: server-sent events for the open page, fed from the bus (see :mod:`..live`).

A notice carries ids only, and a page re-reads what changed through the services with the user's
token; still, a user is sent only the notices about what their role lets them see (a mailbox
owner: their own mailboxes and wall), so not even the ids of others' things reach their browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from mailwarden_console.live import Notice
from mailwarden_console.session import Session
from mailwarden_console.web import Signed

router = APIRouter()

HEARTBEAT_S = 15.0
STREAM_FOR_S = 300.0
"""A stream ends after this long and the browser reconnects: no connection outlives a stop for long."""


@dataclass(frozen=True)
class Visible:
    """Which notices one signed-in user is sent."""

    session: Session
    own_mailboxes: Collection[str] = ()

    def __call__(self, notice: Notice) -> bool:
        s = self.session
        if notice.kind == "job":
            return s.may("jobs:run", everything=True)
        if notice.kind == "alert":
            if s.may("alerts:read", everything=True):
                return True
            return s.only_own("alerts:read") and notice.ids.get("recipient") == f"user:{s.subject}"
        if notice.kind == "mailbox":
            if s.may("mailboxes:read", everything=True):
                return True
            return s.only_own("mailboxes:read") and notice.ids.get("mailbox_id") in self.own_mailboxes
        return False


@router.get("/events")
async def events(ctx: Signed) -> StreamingResponse:
    hub, request = ctx.console.feed.hub, ctx.request
    own: list[str] = []
    if ctx.session.only_own("mailboxes:read"):
        identity, _ = await ctx.try_call("mailbox-svc whoami")
        own = [m["mailbox_id"] for m in (identity or {}).get("own_mailboxes", [])]
    visible = Visible(ctx.session, frozenset(own))

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
                if visible(notice):
                    yield notice.sse()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
