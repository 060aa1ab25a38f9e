"""POP3 INBOX sync: a UIDL ledger, messages left on the server unless the profile says otherwise.

Each pass logs in, reads UIDL and LIST, and publishes every message whose UIDL is not in the
ledger (the ``ledger`` collection: the event ids derived from the UIDLs). Without a
"process email from" date the first pass only records what is there; with one, it reads each
message's headers (TOP n 0) and skips those dated before it (POP3 has no arrival time). A
mailbox that comes from IMAP recognises what IMAP published by Message-ID, Date and size.
Messages are deleted (DELE, applied at QUIT) only with ``pop3_delete_after_sync`` and only once
published.
"""

from __future__ import annotations

from contracts.email import SyncProtocol, email_event_id
from mailwarden_mailnet.pop3 import Pop3Client
from sync_svc import metrics
from sync_svc.connect import pop3_session, step
from sync_svc.documents import LedgerEntry
from sync_svc.parse import parse_headers
from sync_svc.publisher import Fetched, fingerprint, since_start
from sync_svc.session import MailboxSync


class Pop3Sync(MailboxSync):
    protocol: SyncProtocol = "pop3"

    async def pass_once(self) -> None:
        async with self.s.hosts.slot(self.target.endpoint.host, self.target.max_connections):
            self.step = "credentials"
            login = await self.login()
            self.step = "login"
            client = await pop3_session(self.s.env, self.target, login)
            try:
                await self._catch_up(client)
                self.step = "logout"
                async with step(self.s.env.step_timeout_s):
                    await client.quit()
            finally:
                client.wire.abort()
        await self.caught_up("poll")

    async def _catch_up(self, client: Pop3Client) -> None:
        mailbox_id = self.target.mailbox_id
        self.step = "fetch"
        async with step(self.s.env.step_timeout_s * 4):
            client.wire.reset_budget()
            uidl = await client.uidl()
            sizes = await client.sizes()
        state = await self.s.stores.states.get_state(mailbox_id)
        self.saw_episode(state.episode is not None)
        ids = {n: str(email_event_id(mailbox_id, None, u)) for n, u in uidl.items()}
        known = await self.s.stores.ledger.known_ids(ids.values())
        new = [n for n in sorted(uidl) if ids[n] not in known]
        first = state.protocol != "pop3"
        start = state.resync_from or self.target.process_email_from
        if first and start is None and not state.messages_seen:
            # Nothing published yet and no start date: what is there now is the baseline.
            await self.s.stores.ledger.record_published(
                [self._ledger(mailbox_id, ids[n], uidl[n]) for n in new]
            )
            await self.s.stores.states.update_state(mailbox_id, {"protocol": "pop3"})
            return
        recognise = first and bool(state.messages_seen)
        since = since_start(start)
        cap = self.s.options.max_message_bytes
        records: list[LedgerEntry] = []
        skipped: list[LedgerEntry] = []
        for n in new:
            size = sizes.get(n, 0)
            if since is not None or recognise:
                async with step(self.s.env.step_timeout_s):
                    head = parse_headers(await client.headers(n))
                fp = fingerprint(mailbox_id, head.message_id, head.date, size)
                old = since is not None and head.date is not None and head.date < since
                if old or (recognise and await self.s.stores.ledger.known_fingerprints(mailbox_id, [fp])):
                    skipped.append(self._ledger(mailbox_id, ids[n], uidl[n]))
                    continue
            async with step(self.s.env.step_timeout_s * 4):
                client.wire.reset_budget(cap + 65_536)
                if size <= cap:
                    msg = Fetched(size=size, raw=await client.retrieve(n), uidl=uidl[n])
                else:
                    msg = Fetched(size=size, headers=await client.headers(n), uidl=uidl[n])
            records.append(await self.s.publisher(self.target, msg, "pop3"))
            if self.target.delete_after_sync:
                async with step(self.s.env.step_timeout_s):
                    await client.delete(n)
        metrics.SKIPPED.labels(reason="older_than_process_from").inc(len(skipped))
        await self.s.stores.ledger.record_published(records + skipped)
        await self.s.stores.states.update_state(
            mailbox_id, {"protocol": "pop3", "resync_from": None}, inc={"messages_seen": len(records)}
        )

    @staticmethod
    def _ledger(mailbox_id: str, event_id: str, uidl: str) -> LedgerEntry:
        """A UIDL seen but not published (baseline, or older than the start date)."""
        return LedgerEntry(id=event_id, m=mailbox_id, uidl=uidl, baseline=True)
