"""Turn MailboxStatusChanged events into alerts: fan-out, grouping, the majority alert, auto-resolve.

Every step is idempotent, so a redelivered event (or one re-published with a new envelope id)
changes nothing: alerts count occurrences keyed on the test id, and resolutions are conditional.

Events arrive in batches (a job's results come in bursts). Those that touch only their own
mailbox's alerts are applied together in a few round trips; any other event (a failure, which may
group or count towards the majority alert; warnings, which land on the profile's alert; a success
on a profile with open profile alerts) is handled alone, in stream order, so every count still
sees exactly the events before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from alert_svc import rules
from alert_svc.config import Settings
from alert_svc.domain import PROFILE_MAJORITY_FAILURE, Draft, recipient_key
from alert_svc.metrics import ALERTS_RAISED
from alert_svc.readcache import ReadModelCache
from alert_svc.store import Stores
from alert_svc.store.alert_writes import AlertStore, Planned
from alert_svc.store.alerts import AlertDoc, cause_scope, mailbox_scope, profile_scope
from contracts.envelope import Envelope
from contracts.errors import ErrorCode
from contracts.events import MailboxStatusChanged

log = logging.getLogger(__name__)


class StatusProcessor:
    """Handles one event at a time (its consumer has one worker): grouping counts must see each
    other's writes, so a profile's count-then-decide steps never interleave."""

    def __init__(self, stores: Stores, settings: Settings, cache: ReadModelCache | None = None) -> None:
        self.alerts = stores.alerts
        self.failures = stores.failures
        self.settings = settings
        self.cache = cache or ReadModelCache(stores.read_models, settings.alert_read_model_ttl_s)

    async def handle_batch(self, envelopes: Sequence[Envelope[MailboxStatusChanged]]) -> None:
        """Many events in stream order: runs of independent ones together, every other one alone."""
        run: list[Envelope[MailboxStatusChanged]] = []
        in_run: set[str] = set()
        for envelope in envelopes:
            mailbox_id = envelope.data.mailbox.mailbox_id
            alone = not independent(envelope.data)
            if alone or mailbox_id in in_run:  # a mailbox's second event waits for its first
                await self._handle_run(run)
                run, in_run = [], set()
            if alone:
                await self.handle(envelope)
            else:
                run.append(envelope)
                in_run.add(mailbox_id)
        await self._handle_run(run)

    async def _handle_run(self, run: Sequence[Envelope[MailboxStatusChanged]]) -> None:
        """Independent events of distinct mailboxes: one read of their open alerts, two bulk writes.

        An event whose profile has open profile alerts (a group to leave, warnings or a majority
        alert to resolve) is handled alone after the run: an independent event only resolves
        such alerts, never opens one, so the others' plans do not depend on it.
        """
        if len(run) <= 1:
            for envelope in run:
                await self.handle(envelope)
            return
        policy = await self.cache.policy()
        for envelope in run:
            await self.cache.note_mailbox(envelope.data.mailbox.mailbox_id, envelope.data.mailbox.profile_id)
        scopes = [mailbox_scope(e.data.mailbox.mailbox_id) for e in run]
        scopes += list(dict.fromkeys(profile_scope(e.data.mailbox.profile_id) for e in run))
        found = list({d.id: d for d in await self.alerts.open_alerts_in(scopes)}.values())
        busy_profiles = {d.profile_id for d in found if d.mailbox_id is None}
        plans: list[AlertPlan] = []
        alone: list[Envelope[MailboxStatusChanged]] = []
        outcomes: list[tuple[str, str, str, Sequence[tuple[str, str | None]], datetime]] = []
        for envelope in run:
            event, ref = envelope.data, envelope.data.mailbox
            if ref.profile_id in busy_profiles:
                alone.append(envelope)
                continue
            at = envelope.occurred_at
            succeeded = [(d.value, None) for d in rules.succeeded_directions(event)]
            outcomes.append((ref.mailbox_id, ref.email, ref.profile_id, succeeded, at))
            mine = [d for d in found if d.mailbox_id == ref.mailbox_id]
            plan = AlertPlan(self.alerts, event.test_id or f"event-{envelope.id}", event.test_id, at)
            profile_name = await self.cache.profile_name(ref.profile_id)
            for draft in rules.allowed(rules.fan_out(event, policy, profile_name).drafts, policy):
                plan.raise_(draft, mine)
            self._plan_recovered(plan, event, mine)
            plans.append(plan)
        await self.failures.record_many(outcomes)
        for results in await AlertPlan.apply_all(self.alerts, plans):
            for level, outcome in results:
                ALERTS_RAISED.labels(level=level, outcome=outcome).inc()
        for envelope in alone:
            await self.handle(envelope)

    async def handle(self, envelope: Envelope[MailboxStatusChanged]) -> None:
        """Few round trips: record both directions in one write, read every open alert the event
        may count on or resolve in one query, then write every alert change in one bulk write."""
        event = envelope.data
        ref = event.mailbox
        occurrence = event.test_id or f"event-{envelope.id}"
        at = envelope.occurred_at
        policy = await self.cache.policy()
        profile_name = await self.cache.profile_name(ref.profile_id)
        await self.cache.note_mailbox(ref.mailbox_id, ref.profile_id)

        failures = {f.direction: f for f in rules.failures(event)}
        succeeded = rules.succeeded_directions(event)
        outcomes: list[tuple[str, str | None]] = [(d.value, None) for d in succeeded]
        outcomes += [(d.value, f.error.code.value) for d, f in failures.items()]
        await self.failures.record_outcomes(ref.mailbox_id, ref.email, ref.profile_id, outcomes, at)

        fan = rules.fan_out(event, policy, profile_name)
        drafts = list(fan.drafts)
        grouped: list[str] = []
        for failure, draft in fan.profile_errors:
            draft, cause = await self._maybe_group(failure, draft, profile_name, at)
            drafts.append(draft)
            grouped += [cause] if cause else []

        scopes = [mailbox_scope(ref.mailbox_id), profile_scope(ref.profile_id), *grouped]
        found = list({d.id: d for d in await self.alerts.open_alerts_in(scopes)}.values())
        plan = AlertPlan(self.alerts, occurrence, event.test_id, at)
        # The per-mailbox alerts a group replaces leave the profile owner's wall.
        plan.resolve([d for d in found if set(d.open_in or ()) & set(grouped)], "grouped")
        for draft in rules.allowed(drafts, policy):
            plan.raise_(draft, found)
        self._plan_recovered(plan, event, found)
        for draft in await self._majority(event, policy, profile_name, found, plan):
            plan.raise_(draft, found)
        for level, outcome in await plan.apply():
            ALERTS_RAISED.labels(level=level, outcome=outcome).inc()

    async def _maybe_group(
        self, failure: rules.Failure, draft: Draft, profile_name: str, at: datetime
    ) -> tuple[Draft, str | None]:
        """A profile-scope cause shared by enough mailboxes becomes one profile alert.

        Returns the draft to raise and, when grouped, the scope of the alerts the group replaces.
        """
        if not failure.profile_scope:
            return draft, None
        code = failure.error.code
        since = at - timedelta(seconds=self.settings.alert_group_window_s)
        mailboxes = await self.failures.failing_mailboxes(
            draft.profile_id, failure.direction.value, code.value, since
        )
        if len(mailboxes) < self.settings.alert_group_min_mailboxes:
            return draft, None
        cause = cause_scope(
            recipient_key(draft.recipient), draft.profile_id, code.value, failure.direction.value
        )
        return rules.group_draft(draft, ErrorCode(code), profile_name, mailboxes), cause

    @staticmethod
    def _plan_recovered(plan: AlertPlan, event: MailboxStatusChanged, found: list[AlertDoc]) -> None:
        """Succeeded directions resolve their errors and leave the profile's groups."""
        ref = event.mailbox
        mine = [d for d in found if d.mailbox_id == ref.mailbox_id and d.level == "error"]
        groups = [d for d in found if d.kind == "group" and d.profile_id == ref.profile_id]
        for direction in rules.succeeded_directions(event):
            plan.resolve([d for d in mine if d.direction == direction.value], "recovered")
            for group in (g for g in groups if g.direction == direction.value):
                if ref.mailbox_id in group.affected_mailboxes:
                    plan.leave_group(group, ref.mailbox_id)
                elif not group.affected_mailboxes:
                    plan.resolve([group], "recovered")
        if rules.is_success(event):
            plan.resolve([d for d in mine if d.direction is None], "recovered")
            present = {w.value for w in rules.warning_codes(event)}
            warnings = [
                d
                for d in found
                if d.kind == "warning" and d.profile_id == ref.profile_id and d.code not in present
            ]
            plan.resolve(warnings, "recovered")

    async def _majority(
        self,
        event: MailboxStatusChanged,
        policy: rules.OrgPolicy,
        profile_name: str,
        found: list[AlertDoc],
        plan: AlertPlan,
    ) -> list[Draft]:
        """More than half of a profile's mailboxes failing within the window: one profile alert.

        Counted only when it can change something: the event failed, or a majority alert is open.
        """
        ref = event.mailbox
        open_majority = [
            d
            for d in found
            if d.kind == "majority" and d.profile_id == ref.profile_id and d.code == PROFILE_MAJORITY_FAILURE
        ]
        has_failures = bool(rules.failures(event))
        if not has_failures and not open_majority:
            return []
        window = self.settings.alert_majority_window_s
        failed = await self.failures.failed_mailbox_count(ref.profile_id, plan.at - timedelta(seconds=window))
        # Counting the profile's mailboxes reads all of them: only needed when something failed.
        total = await self.cache.mailbox_total(ref.profile_id) if failed else 0
        if failed and total >= self.settings.alert_majority_min_mailboxes and failed * 2 > total:
            if has_failures:
                draft = rules.majority_draft(event, profile_name, failed, total, int(window // 60))
                return rules.allowed([draft], policy)
            return []
        plan.resolve(open_majority, "recovered")
        return []


def independent(event: MailboxStatusChanged) -> bool:
    """No failure and no warning: the event can only raise or resolve its own mailbox's alerts
    (and resolve, never open, its profile's), and counts towards nothing."""
    return not rules.failures(event) and not event.warnings


class AlertPlan:
    """The alert writes of one status event, decided from the open alerts read up front."""

    def __init__(self, repo: AlertStore, occurrence: str, test_id: str | None, at: datetime) -> None:
        self.repo = repo
        self.occurrence = occurrence
        self.test_id = test_id
        self.at = at
        self._planned: list[Planned] = []
        self._raised: list[tuple[str, str]] = []  # (level, outcome) per draft, in order
        self._raise_index: list[int] = []  # which planned write raised which draft
        self._keys: set[str] = set()
        self._resolving: set[str] = set()

    def resolve(self, docs: list[AlertDoc], reason: str) -> None:
        for doc in docs:
            if doc.id not in self._resolving:
                self._resolving.add(doc.id)
                self._planned.append(self.repo.plan_resolve(doc, reason, self.at))

    def leave_group(self, group: AlertDoc, mailbox_id: str) -> None:
        if group.id not in self._resolving:
            self._resolving.add(group.id)
            self._planned.append(self.repo.plan_leave_group(group, mailbox_id, self.at))

    def raise_(self, draft: Draft, found: list[AlertDoc]) -> None:
        if draft.key in self._keys:  # the same key twice in one event: the first one counts
            self._raised.append((draft.level, "duplicate"))
            return
        self._keys.add(draft.key)
        current = next((d for d in found if d.open_key == draft.key and d.id not in self._resolving), None)
        if current is not None and self.occurrence in current.occurrences:
            self._raised.append((draft.level, "duplicate"))
            return
        self._raised.append((draft.level, "new" if current is None else "repeat"))
        self._raise_index.append(len(self._planned))
        self._planned.append(self.repo.plan_raise(draft, current, self.occurrence, self.test_id, self.at))

    async def apply(self) -> list[tuple[str, str]]:
        """Write everything; returns (level, outcome) per raised draft for the metrics."""
        return self._outcomes(await self.repo.apply(self._planned))

    @staticmethod
    async def apply_all(repo: AlertStore, plans: Sequence[AlertPlan]) -> list[list[tuple[str, str]]]:
        """The writes of many plans (of distinct mailboxes) in one bulk write; outcomes per plan."""
        retried = await repo.apply([p for plan in plans for p in plan._planned])
        out, start = [], 0
        for plan in plans:
            end = start + len(plan._planned)
            out.append(plan._outcomes(None if retried is None else retried[start:end]))
            start = end
        return out

    def _outcomes(self, retried: Sequence[object] | None) -> list[tuple[str, str]]:
        if retried is None:
            return self._raised
        outcomes = iter(str(retried[i]) for i in self._raise_index)
        return [(level, next(outcomes) if o != "duplicate" else o) for level, o in self._raised]
