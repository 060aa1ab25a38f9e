"""IMAP INBOX sync: first sync from "process email from", then exact increments by UID.

Watermark per mailbox: (UIDVALIDITY, last UID published). A pass lists what is new with one
``UID FETCH n:* (UID RFC822.SIZE INTERNALDATE)``, then fetches bodies with one command per window
of ``fetch_window`` UIDs (``BODY.PEEK[]``: nothing is marked read; headers only above the size
cap), the next window's command pipelined behind the current one, streamed into one
:class:`~sync_svc.pipeline.Pipeline` that publishes them and inserts their ledger entries in
batches of ``fetch_batch`` behind the reader. The state (watermark and count) is written once per
window, after every batch of it is published and in the ledger (a small mailbox's pass: once,
with the pass's own fields), so a crash re-publishes at most the batches in flight, under the
same event ids (dropped by JetStream), and the ledger keeps what the window stored from being
fetched again. When UIDVALIDITY changes, when the mailbox comes from another
protocol, or on a resync, the pass lists everything since the start date and recognises what
was published before by Message-ID, Date and size: nothing is published twice.

Without a "process email from" date, the first sync starts at the present: the INBOX's existing
messages are not published, only what arrives afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from contracts.email import SyncProtocol, email_event_id
from contracts.errors import ErrorCode
from mailwarden_mailnet.classify import classify_exception
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import FetchItem, ImapClient, Selected
from mailwarden_mailnet.login import Login
from mailwarden_runtime.bounded import honour_cancellation
from sync_svc import metrics
from sync_svc.connect import open_imap, step
from sync_svc.documents import LedgerEntry, SyncStateDoc
from sync_svc.hosts import idle_slots
from sync_svc.parse import parse_headers
from sync_svc.pipeline import Pipeline
from sync_svc.publisher import Fetched, fingerprint, since_start
from sync_svc.session import MailboxSync
from sync_svc.store.states import Counters, StateFields

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


def _counted(seen: int) -> Counters | None:
    return {"messages_seen": seen} if seen else None


def imap_date(at: datetime) -> bytes:
    """``1-Jan-2000``: a SEARCH date (RFC 3501), in English whatever the locale."""
    return b"%d-%s-%d" % (at.day, _MONTH_NAMES[at.month - 1], at.year)


_MONTH_NAMES = [m.encode() for m in "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()]


Sent = list[tuple[bytes, bool]]
"""A window's FETCH commands: (tag, headers only)."""


Lookup = Callable[[], Coroutine[object, None, tuple[list[Listed], int]]]
"""A window's messages to fetch and its count of messages known by event id."""


class _Ahead:
    """The next window while this one streams in: its lookup (the ledger's, after the rest
    search's answer when it comes from one: started once ``ready``), and its FETCH sent as soon
    as the lookup is back (the server starts on it when it has answered this one)."""

    def __init__(
        self,
        lookup: Lookup,
        send: Callable[[list[Listed]], Awaitable[Sent]],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self._lookup = lookup
        self._ready = ready
        self._send = send
        self._sent: Sent | None = None
        self.lookup: asyncio.Task[tuple[list[Listed], int]] | None = None
        self._start(ready())

    def _start(self, now: bool) -> None:
        if self.lookup is None and now:
            self.lookup = asyncio.create_task(self._lookup())

    async def send_when_ready(self) -> None:
        """Start the lookup once ready; send the FETCH if it is back (a failed lookup is raised by
        :meth:`sent`)."""
        self._start(self._ready())
        lookup = self.lookup
        if lookup is None or self._sent is not None or not lookup.done() or lookup.cancelled():
            return
        if lookup.exception() is None:
            self._sent = await self._send(lookup.result()[0])

    async def sent(self) -> tuple[int, Sent]:
        """The window's count of messages known by event id and its commands, sent now if not yet."""
        self._start(True)
        assert self.lookup is not None
        todo, known = await self.lookup  # the database's error as it is: not the mailbox's
        if self._sent is None:
            self._sent = await self._send(todo)
        return known, self._sent

    async def cancel(self) -> None:
        if self.lookup is not None:
            self.lookup.cancel()  # no-op once done
            await asyncio.gather(self.lookup, return_exceptions=True)


class _FirstSearches:
    """A first sync's searches, sent together (ESEARCH: each answer carries its tag): the
    candidates among the INBOX's first ``first_window`` messages (and those of them over the size
    cap), their UIDs, then the same two over the whole INBOX. The first window's FETCH waits only
    for the first three; the whole INBOX's answer comes behind them while that FETCH is on its
    way, so the next window's FETCH is sent while the first one streams in (bench/README.md, one
    big INBOX: the search sent behind the first FETCH left the server idle for the search and a
    round trip after it). The rest is what the whole search found above the first window's last
    UID: a cut by UID, so a message expunged meanwhile moves no other one out of both."""

    def __init__(self, client: ImapClient, timeout_s: float) -> None:
        self.client = client
        self.after = 0
        """The first window's last UID (once :meth:`first`)."""
        self.top = 0
        """The highest UID found (once :meth:`found`)."""
        self._timeout_s = timeout_s
        self._head: list[bytes] = []
        self._rest: list[bytes] = []

    async def drain(self) -> None:
        """Read every answer (refusals too): after a refused SELECT, before anything else is sent."""
        for tag in (*self._head, *self._rest):
            with contextlib.suppress(NetError):
                await self.client.searched(tag)

    async def send(self, criteria: tuple[bytes, bytes], first_window: int) -> None:
        head = b"1:%d" % first_window
        self._head = [await self.client.send_uid_search(head + b" " + c) for c in (*criteria, b"ALL")]
        self._rest = [await self.client.send_uid_search(c) for c in criteria]

    async def first(self) -> tuple[list[int], list[int]]:
        """The first window's candidates and those of them over the size cap."""
        async with step(self._timeout_s):
            found, large, first = [await self.client.searched(t) for t in self._head]
        self.after = self.top = max(first, default=0)
        return [u for u in found if u <= self.after], large

    def done(self) -> bool:
        return bool(self._rest) and all(self.client.search_done(t) for t in self._rest)

    async def found(self) -> tuple[list[int], list[int]]:
        """The UIDs found above the first window, and those of them over the size cap; read from
        the server if not in yet."""
        async with step(self._timeout_s):
            found, large = [await self.client.searched(t) for t in self._rest]
        found = [u for u in found if u > self.after]
        self.top = max([self.after, *found])
        return found, large


async def select_inbox(
    client: ImapClient, then: bytes | None, searched: _FirstSearches | None
) -> tuple[Selected, _FirstSearches | None]:
    """The INBOX selected, and the first sync's searches if they still hold. ``then``: the tag of
    the SELECT sent behind the login. A server that refused it there (one that takes no command
    before it has answered the login) is asked again on its own, once the searches sent behind it
    (refused as well) are read: a pass then goes on as without them."""
    if then is None:
        return await client.select(b"INBOX"), searched
    try:
        return await client.selected(then), searched
    except NetError:
        if searched is not None:
            await searched.drain()
        return await client.select(b"INBOX"), None


class ImapSync(MailboxSync):
    protocol: SyncProtocol = "imap"
    caps: tuple[str, ...] = ()
    """The logged-in session's capabilities."""
    _oldest: datetime | None = None
    """This pass's first instant to publish (messages fetched from a SEARCH by day may be older)."""
    _no_ledger = False
    """This pass is a first sync of a mailbox with nothing in the ledger: no window need be looked up."""

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
        """One session: the login and the mailbox's sync state are read while TCP and TLS are set
        up, ``SELECT INBOX`` goes out behind the credentials, and a first sync's searches behind
        it, before its answer (one round trip each; bench/README.md, one big INBOX). A failure
        of the login is still the credentials step's (the step is named when it is awaited)."""
        asking = asyncio.ensure_future(self.login())
        reading = asyncio.ensure_future(self.s.stores.states.get_state(self.target.mailbox_id))

        async def credentials() -> Login:
            self.step = "credentials"
            login = await asking
            self.step = "login"
            return login

        self.step = "login"
        try:
            opened = await open_imap(self.s.env, self.target, credentials, b"SELECT INBOX")
        except BaseException:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            raise
        finally:
            if not asking.done():
                asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)  # its error is never left unread
        client = opened.client
        try:
            state = await reading  # the database's error as it is: not the mailbox's
            searched = None
            if opened.then is not None and self._searched_early(opened.caps, state):
                searched = await self._send_first_searches(
                    client, state.resync_from or self.target.process_email_from
                )
            self.step = "inbox"
            async with step(self.s.env.step_timeout_s):
                selected, searched = await select_inbox(client, opened.then, searched)
                caps = opened.caps if opened.caps is not None else await client.capabilities()
            self.caps = tuple(caps)
            if selected.uidvalidity is None:
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, "SELECT gave no UIDVALIDITY")
            left = await self.catch_up(client, selected, state, searched)
            if idle and "IDLE" in caps:
                await self.caught_up("idle", *left)
                await self._idle(client, selected)
                return
            await self.caught_up("poll", *left)
            with contextlib.suppress(NetError, OSError, TimeoutError):
                async with asyncio.timeout(self.s.env.step_timeout_s):
                    await client.command(b"LOGOUT", logout=True)
        finally:
            client.wire.abort()

    async def _idle(self, client: ImapClient, selected: Selected) -> None:
        """IDLE until the server reports a change (or the renewal time), catch up, idle again;
        until a pass waiting for this host's slot asks for ours (:meth:`HostSlots.should_yield`):
        then catch up once more, note the mode, and return (the session logs out; the mailbox polls)."""
        renew, host = self.s.options.idle_renew_s, self.target.endpoint.host
        wanted = self.s.hosts.wanted(host)
        metrics.IDLE_SESSIONS.inc()
        try:
            while True:
                honour_cancellation()  # a library may have swallowed it (see MailboxSync.run)
                self.step = "idle"
                async with step(self.s.env.step_timeout_s):
                    tag = await client.idle_start()
                give_up = await self._idle_until_news(client, wanted, renew)
                async with step(self.s.env.step_timeout_s):
                    await client.idle_done(tag)
                left, seen = await self.catch_up(client, selected)
                if give_up:
                    await self.s.stores.states.update_state(
                        self.target.mailbox_id, {**left, "mode": "poll"}, _counted(seen)
                    )
                    return
                if left or seen:
                    await self.s.stores.states.update_state(self.target.mailbox_id, left, _counted(seen))
        finally:
            metrics.IDLE_SESSIONS.dec()

    async def _idle_until_news(self, client: ImapClient, wanted: asyncio.Event, renew_s: float) -> bool:
        """Wait for new mail (EXISTS), the renewal time, or a request for the slot; True for the last."""
        host = self.target.endpoint.host

        async def news() -> None:
            while not (await client.idle_wait()).upper().endswith(b" EXISTS"):
                pass

        async def asked() -> None:
            while True:
                await wanted.wait()
                if self.s.hosts.should_yield(host):
                    return
                await asyncio.sleep(0)  # cleared by should_yield: wait for the next request

        reading, asking = asyncio.create_task(news()), asyncio.create_task(asked())
        try:
            done, _ = await asyncio.wait(
                {reading, asking}, timeout=renew_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (reading, asking):
                task.cancel()
            await asyncio.gather(reading, asking, return_exceptions=True)
        if reading in done and (error := reading.exception()) is not None:
            raise error
        return asking in done

    # ---- catching up -----------------------------------------------------------------------------

    async def catch_up(
        self,
        client: ImapClient,
        selected: Selected,
        state: SyncStateDoc | None = None,
        searched: _FirstSearches | None = None,
    ) -> tuple[StateFields, int]:
        """Publish what is new; returns the state fields left to write (the watermark at the end)
        and the messages to count as seen, which the caller writes with its own in one write: a
        small mailbox's pass writes its state once (bench/README.md, many small mailboxes).
        ``state``: read already; ``searched``: a first sync's searches, sent already
        (:meth:`_searched_early`)."""
        self.step = "fetch"
        self._no_ledger = False
        mailbox_id = self.target.mailbox_id
        uidvalidity = selected.uidvalidity
        assert uidvalidity is not None
        if state is None:
            state = await self.s.stores.states.get_state(mailbox_id)
        self.saw_episode(state.episode is not None)
        resync_from = state.resync_from
        start = resync_from or self.target.process_email_from
        self._oldest = since_start(start)
        same_box = state.uidvalidity == uidvalidity and state.protocol in (None, "imap")
        if same_box and resync_from is None:
            last = state.last_uid or 0
            listed = [x for x in await self._list(client, b"%d:*" % (last + 1)) if x.uid > last]
            seen = await self._publish(client, uidvalidity, self._since(listed, start), recognise=False)
            return ({"last_uid": listed[-1].uid} if listed else {}), seen
        seen_before = bool(state.messages_seen) or state.protocol not in (None, "imap")
        if start is None and not seen_before:
            return await self._baseline(client, uidvalidity), 0
        # Only this task writes the mailbox's ledger (its lease): with nothing in it, no message of
        # this pass can be known by event id. A first sync skips the lookups (2,000 ids each:
        # ~0.1 s of the database's CPU per window on SecantusDB; bench/README.md, session 6).
        self._no_ledger = not seen_before and not await self.s.stores.ledger.has_ledger(mailbox_id)
        more: _FirstSearches | None = None
        if seen_before:
            listed = await self._list(client, b"1:*")
            top = listed[-1].uid if listed else 0
            listed = self._since(listed, start)
        elif searched is not None or (
            "ESEARCH" in self.caps and selected.exists > self.s.options.first_window
        ):
            more = searched or await self._send_first_searches(client, start)
            listed = self._candidates(*await more.first())
        else:
            listed, top = await self._search(client, selected, start)
        seen = await self._publish(client, uidvalidity, listed, recognise=seen_before, more=more)
        if more is not None:
            top = max([(selected.uidnext or 1) - 1, more.top])
        return {"uidvalidity": uidvalidity, "last_uid": top, "protocol": "imap", "resync_from": None}, seen

    def _criteria(self, start: date | None) -> tuple[bytes, bytes]:
        """A first sync's SEARCH criteria: since the day before the start date, and those of them
        over the size cap (the exact start is checked on each message's INTERNALDATE)."""
        since = since_start(start)
        criteria = b"SINCE " + imap_date(since - timedelta(days=1)) if since is not None else b"ALL"
        return criteria, criteria + b" LARGER %d" % self.s.options.max_message_bytes

    async def _send_first_searches(self, client: ImapClient, start: date | None) -> _FirstSearches:
        """A first sync's searches (:class:`_FirstSearches`), sent. A first SEARCH over a whole big
        INBOX waited while Dovecot read the date of every message (0.5-0.8 s of 10,000 before the
        first event at 50 ms; bench/README.md, one big INBOX): the first window's dates are read
        at once, the rest's while its FETCH is on its way."""
        searches = _FirstSearches(client, self.s.env.step_timeout_s * 4)
        async with step(self.s.env.step_timeout_s):
            await searches.send(self._criteria(start), self.s.options.first_window)
        return searches

    def _searched_early(self, caps: list[str] | None, state: SyncStateDoc) -> bool:
        """Whether this pass is a first sync whose searches can go out before SELECT's answer (its
        ``SELECT`` went behind the login, the state was read meanwhile): a mailbox never synced,
        or one re-synced that never saw a message, with a start date, on a server with ESEARCH."""
        never = state.uidvalidity is None or state.resync_from is not None
        seen_before = bool(state.messages_seen) or state.protocol not in (None, "imap")
        start = state.resync_from or self.target.process_email_from
        return caps is not None and "ESEARCH" in caps and never and not seen_before and start is not None

    def _candidates(self, found: list[int], large: list[int]) -> list[Listed]:
        cap = self.s.options.max_message_bytes
        over = set(large)
        return [Listed(uid, cap + 1 if uid in over else 0, None) for uid in sorted(set(found))]

    async def _search(
        self, client: ImapClient, selected: Selected, start: date | None
    ) -> tuple[list[Listed], int]:
        """A first sync's candidates from two SEARCHes sent together (since the day before the
        start date, and those of them over the size cap), not a listing of every message with
        its size and date: the server answers 10,000 UIDs in a line or two (as ranges with
        ESEARCH) instead of 10,000 FETCH responses for us to read. The exact start is checked on
        each fetched message's INTERNALDATE (:meth:`_stream`). The watermark is the top UID at
        SELECT: what is below it and not found is older than the start."""
        async with step(self.s.env.step_timeout_s * 4):
            found, large = await client.uid_searches(*self._criteria(start), esearch="ESEARCH" in self.caps)
        listed = self._candidates(found, large)
        top = max([(selected.uidnext or 1) - 1, *(x.uid for x in listed)])
        return listed, top

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
    ) -> tuple[list[Listed], int]:
        """Drop what was published before: by event id always, by Message-ID + Date + size when
        re-baselining; and how many were known by event id."""
        mailbox_id = self.target.mailbox_id
        if self._no_ledger and not recognise:
            return batch, 0
        ids = {x.uid: str(email_event_id(mailbox_id, uidvalidity, x.uid)) for x in batch}
        known = await self.s.stores.ledger.known_ids(ids.values())
        left = [x for x in batch if ids[x.uid] not in known]
        by_id = len(batch) - len(left)
        if recognise and left:
            fps: dict[int, str] = {}
            async with step(self.s.env.step_timeout_s * 4):
                async for item in client.uid_fetch(uid_set([x.uid for x in left]), ID_ITEMS, HEADER_BYTES):
                    head = parse_headers(item.sections.get(ID_SECTION, b""))
                    fps[item.uid] = fingerprint(mailbox_id, head.message_id, head.date, item.size or 0)
            seen = await self.s.stores.ledger.known_fingerprints(mailbox_id, fps.values())
            left = [x for x in left if fps.get(x.uid) not in seen]
        metrics.SKIPPED.labels(reason="published_before").inc(len(batch) - len(left))
        return left, by_id

    async def _publish(
        self,
        client: ImapClient,
        uidvalidity: int,
        listed: list[Listed],
        recognise: bool,
        more: _FirstSearches | None = None,
    ) -> int:
        """One ``UID FETCH`` per window of listed UIDs, streamed into one pipeline that publishes
        them and inserts their ledger entries in batches. The next window's ledger lookup runs
        while this window streams in, and its FETCH is sent as soon as the lookup is back: the
        server goes on without a round trip between windows, and the reader never waits for the
        pipeline to drain (bench/README.md, one big INBOX). A window's state write waits in the
        pipeline behind its last batch: the watermark past it with the count of its messages
        (for the last window the caller writes them: the count is returned); re-baselining moves
        the watermark only at the end, so a pass cut short starts it over.

        The count moves with the watermark in one write, so a message in the ledger above the
        watermark was never counted (the pass that stored it died before its state write): an
        incremental pass counts it when its event id comes up as known.

        With ``more`` (a first sync's searches), ``listed`` is its first window and the windows
        after it come from the search of the whole INBOX, sent with the first window's: its
        answer is in while the first window streams in, so the second window's FETCH is too."""
        options = self.s.options
        windows = self._windows(listed)
        if not windows:
            if more is None:
                return 0
            windows = [[]]  # nothing in the first window to publish: the rest may have
        stored_uids: list[int] = []  # ledger entries stored since the last window's state write

        async def stored(records: list[LedgerEntry]) -> None:
            await self.s.stores.ledger.record_published(records)
            stored_uids.extend(r.uid or 0 for r in records)

        def counted(last: int, known: int) -> int:
            """A window's messages once its batches are stored: those up to its last UID (a server
            running pipelined FETCHes at once may have sent some of the next one's), and those
            known by event id."""
            mine = sum(1 for u in stored_uids if u <= last)
            stored_uids[:] = [u for u in stored_uids if u > last]
            return mine + (0 if recognise else known)

        async def window_stored(fields: StateFields, last: int, known: int) -> None:
            await self.s.stores.states.update_state(
                self.target.mailbox_id, fields, _counted(counted(last, known))
            )

        async def rest(search: _FirstSearches) -> tuple[list[Listed], int]:
            """The rest search's windows appended; the first of them looked up."""
            found, large = await search.found()
            windows.extend(self._windows(self._candidates(found, large)))
            if len(windows) == n + 1:
                return [], 0
            return await self._unknown(client, uidvalidity, windows[n + 1], False)

        async with Pipeline(self.s.publisher, self.target, "imap", stored, options.fetch_batch) as out:
            todo, known = await self._unknown(client, uidvalidity, windows[0], recognise)
            sent = await self._send(client, todo)
            send = functools.partial(self._send, client)
            n = 0
            while True:
                window = windows[n]
                following = windows[n + 1] if n + 1 < len(windows) else None
                ahead = None
                if following is not None and not recognise:  # (recognising FETCHes on this connection)
                    ahead = _Ahead(
                        functools.partial(self._unknown, client, uidvalidity, following, False), send
                    )
                elif following is None and more is not None:
                    ahead = _Ahead(functools.partial(rest, more), send, more.done)
                    more = None
                try:
                    for tag, headers_only in sent:
                        await self._stream(client, uidvalidity, tag, out, ahead)
                        if headers_only:  # the large ones' headers: a batch of their own
                            await out.cut()
                        if out.failed:
                            return 0  # leaving the pipeline raises its error
                    if ahead is None and following is None:
                        break
                    if ahead is not None:
                        next_known, sent = await ahead.sent()
                    else:
                        assert following is not None
                        todo, next_known = await self._unknown(client, uidvalidity, following, recognise)
                        sent = await self._send(client, todo)
                finally:
                    if ahead is not None:
                        await ahead.cancel()
                if window:
                    fields: StateFields = (
                        {"protocol": "imap"}
                        if recognise
                        else {"uidvalidity": uidvalidity, "last_uid": window[-1].uid, "protocol": "imap"}
                    )
                    await out.then(functools.partial(window_stored, fields, window[-1].uid, known))
                known = next_known
                if n + 1 == len(windows):  # the rest search found nothing more
                    break
                n += 1
        return counted(next((w[-1].uid for w in reversed(windows) if w), 0), known)

    def _windows(self, listed: list[Listed]) -> list[list[Listed]]:
        size = self.s.options.fetch_window
        return [listed[i : i + size] for i in range(0, len(listed), size)]

    async def _send(self, client: ImapClient, todo: list[Listed]) -> Sent:
        """The FETCH commands of a window, sent at once: the headers of those over the size cap
        first, then the bodies of the others; (tag, headers only) of each."""
        cap = self.s.options.max_message_bytes
        large = [x.uid for x in todo if x.size > cap]
        small = [x.uid for x in todo if x.size <= cap]
        sent: Sent = []
        async with step(self.s.env.step_timeout_s):
            if large:
                sent.append((await client.send_uid_fetch(uid_set(large), HEADER_ITEMS), True))
            if small:
                sent.append((await client.send_uid_fetch(uid_set(small), BODY_ITEMS), False))
        return sent

    async def _stream(
        self, client: ImapClient, uidvalidity: int, tag: bytes, out: Pipeline, ahead: _Ahead | None
    ) -> None:
        """Read one sent FETCH into the pipeline (sending the next window's once its lookup is
        back); the deadline restarts with every message."""
        timeout = self.s.env.step_timeout_s * 4
        budget = max(HEADER_BYTES, self.s.options.max_message_bytes + 65_536)  # (pipelined: either kind)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout) as deadline:
                async for item in client.fetched(tag, budget):
                    deadline.reschedule(loop.time() + timeout)
                    if ahead is not None:
                        await ahead.send_when_ready()
                    fetched = self._fetched(item, uidvalidity)
                    if self._oldest is not None and fetched.internal_date is not None:
                        if fetched.internal_date < self._oldest:  # found by a SEARCH by day
                            metrics.SKIPPED.labels(reason="older_than_process_from").inc()
                            continue
                    if not await out.add(fetched):
                        return  # the pipeline failed: close() raises its error
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
