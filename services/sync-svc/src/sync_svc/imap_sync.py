"""IMAP INBOX sync: first sync from "process email from", then exact increments by UID.

Watermark per mailbox: (UIDVALIDITY, last UID published). A pass lists what is new with one
``UID FETCH n:* (UID RFC822.SIZE INTERNALDATE)``, then fetches bodies in batches
(``BODY.PEEK[]``: nothing is marked read), headers only above the size cap. The watermark moves
only after a whole batch is published, so a crash re-publishes at most one batch, under the same
event ids (dropped by JetStream). When UIDVALIDITY changes, when the mailbox comes from another
protocol, or on a resync, the pass lists everything since the start date and recognises what
was published before by Message-ID, Date and size: nothing is published twice.

Without a "process email from" date, the first sync starts at the present: the INBOX's existing
messages are not published, only what arrives afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from contracts.email import SyncProtocol, email_event_id
from contracts.errors import ErrorCode
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import FetchItem, ImapClient, Selected
from mailwarden_runtime.bounded import honour_cancellation
from mailwarden_runtime.mongo import Document
from sync_svc import metrics
from sync_svc.connect import imap_session, step
from sync_svc.hosts import idle_slots
from sync_svc.parse import parse_headers
from sync_svc.publisher import Fetched, Prepared, fingerprint, since_start
from sync_svc.repository import StateFields
from sync_svc.session import MailboxSync

LIST_ITEMS = b"UID RFC822.SIZE INTERNALDATE"
BODY_ITEMS = b"UID RFC822.SIZE INTERNALDATE BODY.PEEK[]"
HEADER_ITEMS = b"UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER]"
ID_ITEMS = b"UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]"
ID_SECTION = "BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"
LISTING_BYTES = 4096  # one listing response line (no literal)
HEADER_BYTES = 1_048_576  # the header section of a message over the size cap


@dataclass(frozen=True)
class Listed:
    uid: int
    size: int
    internal_date: datetime | None


def internal_date(text: str | None) -> datetime | None:
    """``17-Jul-1996 02:44:25 -0700`` (RFC 3501 date-time; the day may be space-padded)."""
    if not text:
        return None
    try:
        return datetime.strptime(text.strip(), "%d-%b-%Y %H:%M:%S %z")
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
        cap = self.s.options.max_message_bytes
        batch_size = self.s.options.fetch_batch
        for i in range(0, len(listed), batch_size):
            batch = listed[i : i + batch_size]
            todo = await self._unknown(client, uidvalidity, batch, recognise)
            small = [x.uid for x in todo if x.size <= cap]
            large = [x.uid for x in todo if x.size > cap]
            records: list[Document] = []
            if small:
                records += await self._fetch(client, uidvalidity, small, BODY_ITEMS, cap + 65_536)
            if large:
                records += await self._fetch(client, uidvalidity, large, HEADER_ITEMS, HEADER_BYTES)
            await self.s.repo.record_published(records)
            # Re-baselining moves the watermark only at the end: a pass cut short starts it over.
            fields: StateFields = {} if recognise else {"uidvalidity": uidvalidity, "last_uid": batch[-1].uid}
            await self.s.repo.update_state(
                self.target.mailbox_id, {**fields, "protocol": "imap"}, inc={"messages_seen": len(records)}
            )

    async def _fetch(
        self, client: ImapClient, uidvalidity: int, uids: list[int], items: bytes, budget: int
    ) -> list[Document]:
        """Stream the messages: parse and store them concurrently (bounded), publish in UID order."""
        publisher = self.s.publisher
        gate = asyncio.Semaphore(self.s.options.publish_concurrency)
        pending: asyncio.Queue[asyncio.Task[Prepared] | None] = asyncio.Queue()
        tasks: list[asyncio.Task[Any]] = []

        async def prepare(msg: Fetched) -> Prepared:
            try:
                return await publisher.prepare(self.target, msg, "imap")
            finally:
                gate.release()

        async def publish_in_order() -> list[Document]:
            records: list[Document] = []
            while (task := await pending.get()) is not None:
                records.append(await publisher.publish_prepared(await task))
            return records

        sender = asyncio.create_task(publish_in_order())
        tasks.append(sender)
        try:
            async with step(self.s.env.step_timeout_s * 4):
                async for item in client.uid_fetch(uid_set(uids), items, budget):
                    await gate.acquire()
                    task = asyncio.create_task(prepare(self._fetched(item, uidvalidity)))
                    tasks.append(task)
                    pending.put_nowait(task)
                    if sender.done():  # a publish failed: stop fetching
                        break
            pending.put_nowait(None)
            return await sender
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

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
