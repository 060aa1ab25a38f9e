"""Turn one MailboxStatusChanged into alerts: fan-out, grouping, the majority alert, auto-resolve.

Every step is idempotent, so a redelivered event (or one re-published with a new envelope id)
changes nothing: alerts count occurrences keyed on the test id, and resolutions are conditional.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from datetime import datetime, timedelta

from alert_svc import rules
from alert_svc.config import Settings
from alert_svc.domain import PROFILE_MAJORITY_FAILURE, Draft, recipient_key
from alert_svc.metrics import ALERTS_RAISED
from alert_svc.repository import Repository
from contracts.envelope import Envelope
from contracts.errors import ErrorCode
from contracts.events import MailboxStatusChanged

log = logging.getLogger(__name__)


LOCK_STRIPES = 64


class StatusProcessor:
    def __init__(self, repo: Repository, settings: Settings) -> None:
        self.repo = repo
        self.settings = settings
        self._locks = [asyncio.Lock() for _ in range(LOCK_STRIPES)]

    async def handle(self, envelope: Envelope[MailboxStatusChanged]) -> None:
        """One profile's events one at a time: grouping counts must see each other's writes.

        The consumer may run handlers of one batch concurrently; striped locks keep that for
        different profiles while serialising the count-then-decide steps within one.
        """
        profile_id = envelope.data.mailbox.profile_id
        async with self._locks[zlib.crc32(profile_id.encode()) % LOCK_STRIPES]:
            await self._handle(envelope)

    async def _handle(self, envelope: Envelope[MailboxStatusChanged]) -> None:
        event = envelope.data
        ref = event.mailbox
        occurrence = event.test_id or f"event-{envelope.id}"
        at = envelope.occurred_at
        policy = await self.repo.policy()
        profile = await self.repo.profile(ref.profile_id)
        profile_name = str(profile["name"]) if profile else ref.profile_id

        await self.repo.note_mailbox(ref.mailbox_id, ref.profile_id)
        failed = {f.direction: f for f in rules.failures(event)}
        for direction in rules.succeeded_directions(event):
            await self.repo.record_direction(
                ref.mailbox_id, ref.email, ref.profile_id, direction.value, None, at
            )
        for direction, failure in failed.items():
            code = failure.error.code.value
            await self.repo.record_direction(
                ref.mailbox_id, ref.email, ref.profile_id, direction.value, code, at
            )

        fan = rules.fan_out(event, policy, profile_name)
        drafts = list(fan.drafts)
        for failure, draft in fan.profile_errors:
            drafts.append(await self._maybe_group(failure, draft, profile_name, at))
        for draft in rules.allowed(drafts, policy):
            outcome = await self.repo.raise_alert(draft, occurrence, event.test_id, at)
            ALERTS_RAISED.labels(level=draft.level, outcome=outcome).inc()

        await self._resolve_recovered(event, at)
        await self._majority(event, policy, profile_name, occurrence, at)

    async def _maybe_group(
        self, failure: rules.Failure, draft: Draft, profile_name: str, at: datetime
    ) -> Draft:
        """A profile-scope cause shared by enough mailboxes becomes one profile alert."""
        if not failure.profile_scope:
            return draft
        code = failure.error.code
        since = at - timedelta(seconds=self.settings.alert_group_window_s)
        mailboxes = await self.repo.failing_mailboxes(
            draft.profile_id, failure.direction.value, code.value, since
        )
        if len(mailboxes) < self.settings.alert_group_min_mailboxes:
            return draft
        # The per-mailbox alerts this group replaces leave the profile owner's wall.
        await self.repo.resolve(
            {
                "recipient_key": recipient_key(draft.recipient),
                "profile_id": draft.profile_id,
                "kind": "mailbox",
                "code": code.value,
                "direction": failure.direction.value,
            },
            "grouped",
            at,
        )
        return rules.group_draft(draft, ErrorCode(code), profile_name, mailboxes)

    async def _resolve_recovered(self, event: MailboxStatusChanged, at: datetime) -> None:
        ref = event.mailbox
        for direction in rules.succeeded_directions(event):
            await self.repo.resolve(
                {"mailbox_id": ref.mailbox_id, "level": "error", "direction": direction.value},
                "recovered",
                at,
            )
            await self.repo.detach_mailbox(ref.profile_id, direction.value, ref.mailbox_id)
            await self.repo.resolve(
                {
                    "kind": "group",  # first: the (kind, profile_id) index (see Repository.ensure_indexes)
                    "profile_id": ref.profile_id,
                    "direction": direction.value,
                    "affected_mailboxes": {"$size": 0},
                },
                "recovered",
                at,
            )
        if rules.is_success(event):
            await self.repo.resolve(
                {"mailbox_id": ref.mailbox_id, "level": "error", "direction": None}, "recovered", at
            )
            present = {w.value for w in rules.warning_codes(event)}
            for alert in await self.repo.open_alerts({"kind": "warning", "profile_id": ref.profile_id}):
                if alert["code"] not in present:
                    await self.repo.resolve({"_id": alert["_id"]}, "recovered", at)

    async def _majority(
        self,
        event: MailboxStatusChanged,
        policy: rules.OrgPolicy,
        profile_name: str,
        occurrence: str,
        at: datetime,
    ) -> None:
        """More than half of a profile's mailboxes failing within the window: one profile alert."""
        ref = event.mailbox
        window = self.settings.alert_majority_window_s
        failed = await self.repo.failed_mailbox_count(ref.profile_id, at - timedelta(seconds=window))
        # Counting the profile's mailboxes reads all of them: only needed when something failed.
        total = await self.repo.profile_mailbox_count(ref.profile_id) if failed else 0
        if failed and total >= self.settings.alert_majority_min_mailboxes and failed * 2 > total:
            if rules.failures(event):
                draft = rules.majority_draft(event, profile_name, failed, total, int(window // 60))
                for allowed in rules.allowed([draft], policy):
                    outcome = await self.repo.raise_alert(allowed, occurrence, event.test_id, at)
                    ALERTS_RAISED.labels(level=allowed.level, outcome=outcome).inc()
        else:
            await self.repo.resolve(
                {"kind": "majority", "profile_id": ref.profile_id, "code": PROFILE_MAJORITY_FAILURE},
                "recovered",
                at,
            )
