"""IMAP INBOX sync: first sync from "process email from", then exact increments by UID.

Watermark per mailbox: (UIDVALIDITY, last UID published). A pass lists what is new with one
``UID FETCH n:* (UID RFC822.SIZE INTERNALDATE)``, then fetches bodies with one command per window
of ``fetch_window`` UIDs (``BODY.PEEK[]``: nothing is marked read; headers only above the size
cap), streamed into a :class:`~sync_svc.pipeline.Pipeline` that publishes and records them in
batches of ``fetch_batch`` behind the reader. The watermark moves only past UIDs whose batch is
published, so a crash re-publishes at most the batches in flight, under the same event ids
(dropped by JetStream, and known from the ledger after its window). When UIDVALIDITY changes, when the mailbox comes from another
protocol, or on a resync, the pass lists everything since the start date and recognises what
was published before by Message-ID, Date and size: nothing is published twice.

Without a "process email from" date, the first sync starts at the present: the INBOX's existing
messages are not published, only what arrives afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from contracts.email import SyncProtocol, email_event_id
from contracts.errors import ErrorCode
from mailwarden_mailnet.classify import classify_exception
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import FetchItem, ImapClient, Selected
from mailwarden_runtime.bounded import honour_cancellation
from mailwarden_runtime.mongo import Document
from sync_svc import metrics
from sync_svc.connect import imap_session, step
from sync_svc.hosts import idle_slots
from sync_svc.parse import parse_headers
from sync_svc.pipeline import Pipeline
from sync_svc.publisher import Fetched, fingerprint, since_start
from sync_svc.repository import StateFields
from sync_svc.session import MailboxSync

LIST_ITEMS = b"UID RFC822.SIZE INTERNALDATE"
BODY_ITEMS = b"UID RFC822.SIZE INTERNALDATE BODY.PEEK[]"
HEADER_ITEMS = b"UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER]"
ID_ITEMS = b"UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]"
ID_SECTION = "BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"
LISTING_BYTES = 4096  # one listing response line (no literal)
HEADER_BYTES = 1_048_576  # the header section of a message over the size cap


class Progress:
    """Where the watermark may move: the highest expected UID with every expected UID below it
    published (a UID that never comes, expunged meanwhile, holds it until the window ends)."""

    def __init__(self, expected: list[int]) -> None:
        self.expected = sorted(expected)
        self.done: set[int] = set()
        self.next = 0

    def published(self, uids: Iterable[int | None]) -> int | None:
        self.done.update(u for u in uids if u is not None)
        while self.next < len(self.expected) and self.expected[self.next] in self.done:
            self.next += 1
        return self.expected[self.next - 1] if self.next else None


@dataclass(frozen=True)
class Listed:
    uid: int
    size: int
    internal_date: datetime | None


_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DATE_TIME = re.compile(r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*")


def internal_date(text: str | None) -> datetime | None:
    """``17-Jul-1996 02:44:25 -0700`` (RFC 3501 date-time; the day may be space-padded).

    A regular expression and ``datetime``, not ``strptime`` (a tenth of its cost, once per message)."""
    if not text or (m := _DATE_TIME.fullmatch(text)) is None:
        return None
    day, month, year, hour, minute, second, sign, oh, om = m.groups()
    if (mon := _MONTHS.get(month.lower())) is None:
        return None
    offset = timedelta(hours=int(oh), minutes=int(om))
    try:
        return datetime(
            int(year), mon, int(day), int(hour), int(minute), int(second),
            tzinfo=timezone(-offset if sign == "-" else offset),
        )  # fmt: skip
    except ValueError:
        return None


def uid_set(uids: Sequence[int]) -> bytes:
    """``1:3,7,9:10``: ranges keep the command short for long runs of UIDs."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in [*uids[1:], None]:
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        if uid is not None:
            start = prev = uid
    return ",".join(parts).encode()


class ImapSync(MailboxSync):
    protocol: SyncProtocol = "imap"

    async def pass_once(self) -> None:
        opts = self.s.options
        host, limit = self.target.endpoint.host, self.target.max_connections
        if opts.idle and idle_slots(limit) > 0:
            # Idlers hold their slot for the session's life: a share stays for the polls.
            async with self.s.hosts.at_once(host, idle_slots(limit)) as idling:
                if idling:
                    await self._session(idle=True)
                    return
        async with self.s.hosts.slot(host, limit):
            await self._session(idle=False)

    async def _session(self, idle: bool) -> None:
        self.step = "credentials"
        login = await self.login()
        self.step = "login"
        client, caps = await imap_session(self.s.env, self.target, login)
        try:
            self.step = "inbox"
            async with step(self.s.env.step_timeout_s):
                selected = await client.select(b"INBOX")
            if selected.uidvalidity is None:
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, "SELECT gave no UIDVALIDITY")
            left = await self.catch_up(client, selected)
            if idle and "IDLE" in caps:
                await self.caught_up("idle", left)
                await self._idle(client, selected)
                return
            await self.caught_up("poll", left)
            with contextlib.suppress(NetError, OSError, TimeoutError):
                async with asyncio.timeout(self.s.env.step_timeout_s):
                    await client.command(b"LOGOUT", logout=True)
        finally:
            client.wire.abort()

    async def _idle(self, client: ImapClient, selected: Selected) -> None:
        """IDLE until the server reports a change (or the renewal time), catch up, idle again."""
        renew = self.s.options.idle_renew_s
        metrics.IDLE_SESSIONS.inc()
        try:
            while True:
                honour_cancellation()  # a library may have swallowed it (see MailboxSync.run)
                self.step = "idle"
                async with step(self.s.env.step_timeout_s):
                    tag = await client.idle_start()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(renew):
                        while not (await client.idle_wait()).upper().endswith(b" EXISTS"):
                            pass
                async with step(self.s.env.step_timeout_s):
                    await client.idle_done(tag)
                if left := await self.catch_up(client, selected):
                    await self.s.repo.update_state(self.target.mailbox_id, left)
        finally:
            metrics.IDLE_SESSIONS.dec()

    # ---- catching up -----------------------------------------------------------------------------

    async def catch_up(self, client: ImapClient, selected: Selected) -> StateFields:
        """Publish what is new; returns the state fields left to write (the watermark at the end),
        which the caller writes with its own in one write: the ``state`` writes of hundreds of
        concurrent first syncs queue on the database's per-collection lock (bench/README.md)."""
        self.step = "fetch"
        mailbox_id = self.target.mailbox_id
        uidvalidity = selected.uidvalidity
        assert uidvalidity is not None
        state = await self.s.repo.get_state(mailbox_id)
        self.saw_episode(state.episode is not None)
        resync_from = state.resync_from
        start = resync_from or self.target.process_email_from
        same_box = state.uidvalidity == uidvalidity and state.protocol in (None, "imap")
        if same_box and resync_from is None:
            last = state.last_uid or 0
            listed = [x for x in await self._list(client, b"%d:*" % (last + 1)) if x.uid > last]
            await self._publish(client, uidvalidity, self._since(listed, start), recognise=False)
            return {"last_uid": listed[-1].uid} if listed else {}
        seen_before = bool(state.messages_seen) or state.protocol not in (None, "imap")
        if start is None and not seen_before:
            return await self._baseline(client, uidvalidity)
        listed = await self._list(client, b"1:*")
        await self._publish(client, uidvalidity, self._since(listed, start), recognise=seen_before)
        top = listed[-1].uid if listed else 0
        return {"uidvalidity": uidvalidity, "last_uid": top, "protocol": "imap", "resync_from": None}

    @staticmethod
    def _since(listed: list[Listed], start: date | None) -> list[Listed]:
        """Nothing received before the start date is published (its UID may still be high: APPEND)."""
        since = since_start(start)
        if since is None:
            return listed
        kept = [x for x in listed if x.internal_date is None or x.internal_date >= since]
        metrics.SKIPPED.labels(reason="older_than_process_from").inc(len(listed) - len(kept))
        return kept

    async def _baseline(self, client: ImapClient, uidvalidity: int) -> StateFields:
        """No start date: remember where the INBOX stands now and publish only what comes later."""
        listed = await self._list(client, b"*")
        last = max((x.uid for x in listed), default=0)
        return {"uidvalidity": uidvalidity, "last_uid": last, "protocol": "imap"}

    async def _list(self, client: ImapClient, uids: bytes) -> list[Listed]:
        out: list[Listed] = []
        async with step(self.s.env.step_timeout_s * 4):
            async for item in client.uid_fetch(uids, LIST_ITEMS, LISTING_BYTES):
                out.append(Listed(item.uid, item.size or 0, internal_date(item.internal_date)))
        out.sort(key=lambda x: x.uid)
        return out

    async def _unknown(
        self, client: ImapClient, uidvalidity: int, batch: list[Listed], recognise: bool
    ) -> list[Listed]:
        """Drop what was published before: by event id always, by Message-ID + Date + size when re-baselining."""
        mailbox_id = self.target.mailbox_id
        ids = {x.uid: str(email_event_id(mailbox_id, uidvalidity, x.uid)) for x in batch}
        known = await self.s.repo.known_ids(ids.values())
        left = [x for x in batch if ids[x.uid] not in known]
        if recognise and left:
            fps: dict[int, str] = {}
            async with step(self.s.env.step_timeout_s * 4):
                async for item in client.uid_fetch(uid_set([x.uid for x in left]), ID_ITEMS, HEADER_BYTES):
                    head = parse_headers(item.sections.get(ID_SECTION, b""))
                    fps[item.uid] = fingerprint(mailbox_id, head.message_id, head.date, item.size or 0)
            seen = await self.s.repo.known_fingerprints(mailbox_id, fps.values())
            left = [x for x in left if fps.get(x.uid) not in seen]
        metrics.SKIPPED.labels(reason="published_before").inc(len(batch) - len(left))
        return left

    async def _publish(
        self, client: ImapClient, uidvalidity: int, listed: list[Listed], recognise: bool
    ) -> None:
        """One ``UID FETCH`` per window of listed UIDs, streamed; published and recorded in batches."""
        options, repo, mailbox_id = self.s.options, self.s.repo, self.target.mailbox_id
        cap = options.max_message_bytes
        for i in range(0, len(listed), options.fetch_window):
            window = listed[i : i + options.fetch_window]
            todo = await self._unknown(client, uidvalidity, window, recognise)
            large = [x.uid for x in todo if x.size > cap]
            small = [x.uid for x in todo if x.size <= cap]
            progress = Progress(small)

            async def stored(records: list[Document], progress: Progress = progress) -> None:
                await repo.record_published(records)
                done = progress.published(r["uid"] for r in records)
                # Re-baselining moves the watermark only at the end: a pass cut short starts it over.
                fields: StateFields = (
                    {} if recognise or done is None else {"uidvalidity": uidvalidity, "last_uid": done}
                )
                await repo.update_state(
                    mailbox_id, {**fields, "protocol": "imap"}, inc={"messages_seen": len(records)}
                )

            async with Pipeline(self.s.publisher, self.target, "imap", stored, options.fetch_batch) as out:
                if large:  # headers only; published before any smaller UID moves the watermark past them
                    await self._stream(client, uidvalidity, large, HEADER_ITEMS, HEADER_BYTES, out)
                    await out.cut()
                if small and not out.failed:
                    await self._stream(client, uidvalidity, small, BODY_ITEMS, cap + 65_536, out)
            if not recognise:
                last: StateFields = {
                    "uidvalidity": uidvalidity,
                    "last_uid": window[-1].uid,
                    "protocol": "imap",
                }
                await repo.update_state(mailbox_id, last)

    async def _stream(
        self, client: ImapClient, uidvalidity: int, uids: list[int], items: bytes, budget: int, out: Pipeline
    ) -> None:
        """Fetch ``uids`` in one command into the pipeline; the deadline restarts with every message."""
        timeout = self.s.env.step_timeout_s * 4
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout) as deadline:
                async for item in client.uid_fetch(uid_set(uids), items, budget):
                    if not await out.add(self._fetched(item, uidvalidity)):
                        return  # the pipeline failed: close() raises its error
                    deadline.reschedule(loop.time() + timeout)
        except NetError:
            raise
        except Exception as exc:
            raise classify_exception(exc, ErrorCode.STEP_TIMEOUT) from None

    @staticmethod
    def _fetched(item: FetchItem, uidvalidity: int) -> Fetched:
        whole = item.sections.get("BODY[]")
        return Fetched(
            size=item.size or len(whole or b""),
            raw=whole,
            headers=None if whole is not None else item.sections.get("BODY[HEADER]", b""),
            uid=item.uid,
            uidvalidity=uidvalidity,
            internal_date=internal_date(item.internal_date),
        )
