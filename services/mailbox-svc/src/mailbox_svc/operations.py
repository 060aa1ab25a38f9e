"""The operations of mailbox-svc, shared by the HTTP API and NATS request-reply.

Every state change and its events are one MongoDB update (in-document outbox); a change that
loses a race with another writer is re-read and retried, never half applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contracts.email import MailboxSyncFailed
from contracts.envelope import Envelope
from contracts.events import (
    Approval,
    Event,
    MailboxApproved,
    MailboxCreated,
    MailboxUpdated,
    ProfileSnapshot,
    SettingsSnapshot,
    SmtpMode,
)
from contracts.models import ACT_NOT_SUPPORTED, DeliveryMethod, TestStatus, act_sync_refused
from contracts.outgoing import MailboxSendLoginRefused
from mailbox_svc.access import CREDENTIAL_FIELDS, admit, admit_fields
from mailbox_svc.clock import utcnow
from mailbox_svc.credentials import (
    INCOMING,
    OUTGOING,
    CredentialsUnreadable,
    StoredLogin,
    destination_of,
    login_usable_for,
)
from mailbox_svc.documents import CLIENT_FIELDS, MailboxDoc, new_mailbox, patch_login
from mailbox_svc.models import (
    BulkResult,
    ChangeManyRequest,
    HistoryRequest,
    ListRequest,
    MailboxBatchCreate,
    MailboxCreate,
    MailboxFilter,
    MailboxPage,
    MailboxPatch,
    MailboxView,
    Refusal,
    Selection,
    TestAccepted,
    TestHistory,
    TestRunView,
)
from mailbox_svc.profiles import UNAVAILABLE, ProfileDirectory, ProfileUnavailable
from mailbox_svc.store import Stores
from mailbox_svc.store.mailboxes import MailboxWrite
from mailbox_svc.testing import Rings, TestRefused, build_request, pending_test
from mailwarden_runtime.auth import current_actor
from mailwarden_runtime.documents import changes
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.outbox import OutboxEntry, outbox_entry

log = logging.getLogger(__name__)

Envelop = Callable[[Event], Envelope[Any]]
Mutation = Callable[[MailboxDoc, SettingsSnapshot], tuple[MailboxDoc, list[Event]]]
"""The mailbox as it is → as it is to be, and the events of the change (see :meth:`MailboxOperations.mutate`)."""
MAX_RACES = 5
WRITE_CHUNK = 100  # mailbox updates per bulk write (1,000 took > 10 s on a loaded embedded server)
AUTOMATIC = "service:mailbox-svc"  # the actor of changes no caller asked for (test results, retries)


class Skip(Exception):
    """A bulk mutation leaves this mailbox alone (e.g. already approved)."""


class MailboxOperations:
    def __init__(
        self,
        stores: Stores,
        rings: Rings,
        envelop: Envelop,
        wake: Callable[[], None],
        max_selection: int,
        profiles: ProfileDirectory,
        *,
        result_watchdog_s: float,
    ) -> None:
        self.mailboxes = stores.mailboxes
        self.runs = stores.runs
        self.read = stores.read
        self.profiles = profiles
        self.rings = rings
        self.envelop = envelop
        self.wake = wake
        self.max_selection = max_selection
        self.result_watchdog_s = result_watchdog_s
        """When the retry loop looks for a requested test's stored result (``testing.pending_test``)."""

    # ---- create / read ----------------------------------------------------------------------

    async def _check_profile(
        self, profile_id: str | None, field: str = "profile_id"
    ) -> ProfileSnapshot | None:
        """The profile a mailbox is to use; a read model that lags never refuses it (profiles.py)."""
        if profile_id is None:
            return None
        return await self.profiles.require(profile_id, field)

    def _creatable(
        self,
        req: MailboxCreate,
        now: datetime,
        profile: ProfileSnapshot | None,
        approve: bool = False,
        field: str | None = None,
    ) -> tuple[MailboxDoc, list[OutboxEntry]]:
        """A new mailbox and its MailboxCreated (and MailboxApproved when created approved)."""
        destination = destination_of(profile) if profile is not None else None
        doc = new_mailbox(req, self.rings.at_rest, now, destination, current_actor() or AUTOMATIC)
        events: list[Event] = []
        if approve:
            admit(doc, "mailboxes:approve", field)
            doc = doc.model_copy(update={"approval": "approved"})
            events.append(MailboxApproved(mailbox_id=doc.id, email=doc.email, approved_at=now))
        return doc, [outbox_entry(self.envelop(e)) for e in [MailboxCreated(mailbox=doc.snapshot()), *events]]

    async def create(self, req: MailboxCreate) -> MailboxView:
        profile = await self._check_profile(req.profile_id)
        _check_act(req.act_delivery, profile, "act_delivery")
        doc, entries = self._creatable(req, utcnow(), profile)
        if not await self.mailboxes.insert(doc, entries):
            raise DomainError(409, "a mailbox with this id exists", "mailbox_id")
        self.wake()
        log.info("mailbox created", extra={"mailbox_id": doc.id})
        return doc.view()

    async def create_many(self, req: MailboxBatchCreate) -> BulkResult:
        """Create many mailboxes in one bulk write; any problem refuses the whole batch.

        With ``approve`` they are stored approved: the whole batch is refused (403) unless the
        caller may approve every one of them.
        """
        now = utcnow()
        seen: dict[str, ProfileSnapshot | None] = {}
        for i, item in enumerate(req.mailboxes):
            if item.profile_id is not None and item.profile_id not in seen:
                seen[item.profile_id] = await self._check_profile(
                    item.profile_id, f"mailboxes.{i}.profile_id"
                )
            profile = seen.get(item.profile_id or "")
            _check_act(item.act_delivery, profile, f"mailboxes.{i}.act_delivery")
        docs = [
            self._creatable(item, now, seen.get(item.profile_id or ""), req.approve, f"mailboxes.{i}")
            for i, item in enumerate(req.mailboxes)
        ]
        ids = [doc.id for doc, _ in docs]
        if len(set(ids)) != len(ids):
            raise DomainError(422, "duplicate mailbox ids in the batch", "mailboxes")
        if taken := await self.mailboxes.existing_ids(ids):
            raise DomainError(409, f"{len(taken)} mailbox ids exist already", "mailboxes")
        await self.mailboxes.insert_many(docs)
        self.wake()
        return BulkResult(done=ids)

    async def _get_doc(self, mailbox_id: str) -> MailboxDoc:
        doc = await self.mailboxes.get(mailbox_id)
        if doc is None:
            raise DomainError(404, "no such mailbox", "mailbox_id")
        return doc

    async def get(self, mailbox_id: str) -> MailboxView:
        doc = await self._get_doc(mailbox_id)
        admit(doc, "mailboxes:read")
        return doc.view()

    async def list(self, req: ListRequest) -> MailboxPage:
        f = MailboxFilter.model_validate(req.model_dump(exclude={"limit", "after"}))
        docs = await self.mailboxes.page(f, req.limit + 1, req.after)
        more = len(docs) > req.limit
        docs = docs[: req.limit]
        return MailboxPage(items=[d.view() for d in docs], next_after=docs[-1].id if more else None)

    async def history(self, req: HistoryRequest) -> TestHistory:
        admit(await self._get_doc(req.mailbox_id), "mailboxes:read")
        runs = await self.runs.of_mailbox(req.mailbox_id, req.limit)
        return TestHistory(
            items=[
                TestRunView(
                    test_id=r.id,
                    mailbox_id=r.mailbox_id,
                    attempt=r.attempt,
                    job_id=r.job_id,
                    outcome=r.outcome,
                    received_at=r.received_at,
                    result=r.result,
                )
                for r in runs
            ]
        )

    # ---- the one way to change a mailbox ---------------------------------------------------

    async def mutate(self, mailbox_id: str, change: Mutation) -> MailboxDoc:
        """Read, compute the change and its events, write only if nobody else wrote meanwhile.

        A ``MailboxUpdated`` among the events is sent with the snapshot after this very write.
        """
        for _ in range(MAX_RACES):
            doc = await self._get_doc(mailbox_id)
            settings = await self.read.get_settings()
            write = self._write_of(doc, change, settings)
            new = await self.mailboxes.update(write)
            if new is not None:
                if write.events:
                    self.wake()
                return new
        raise DomainError(409, "the mailbox changed too often meanwhile; try again")

    def _write_of(self, doc: MailboxDoc, change: Mutation, settings: SettingsSnapshot) -> MailboxWrite:
        """The write ``change`` makes to ``doc`` (at its version), with its events."""
        changed, events = change(doc, settings)
        stamp = {"updated_at": utcnow(), "updated_by": current_actor() or AUTOMATIC}
        after = changed.model_copy(update={**stamp, "version": doc.version + 1})
        entries = [
            outbox_entry(
                self.envelop(MailboxUpdated(mailbox=after.snapshot()) if isinstance(e, MailboxUpdated) else e)
            )
            for e in events
        ]
        fields = changes(doc, after.model_copy(update={"version": doc.version})).stored() | after.stored(
            stamp
        )
        return MailboxWrite(doc, fields, entries)

    async def _selected_ids(self, selection: Selection) -> Sequence[str]:
        if selection.mailbox_ids is not None:
            return list(selection.mailbox_ids)
        assert selection.filter is not None
        ids = await self.mailboxes.select_ids(selection.filter, self.max_selection + 1)
        if len(ids) > self.max_selection:
            raise DomainError(
                422, f"the filter matches more than {self.max_selection} mailboxes; narrow it", "filter"
            )
        return ids

    async def _bulk_at_once(self, selection: Selection, change: Mutation) -> BulkResult:
        """``_bulk`` in a few round trips for an idempotent ``change`` (one that Skips a mailbox
        already in its target state): read every mailbox, then bulk writes of the updates, each
        conditional on the version read. A mailbox another writer changed meanwhile goes
        through ``mutate`` alone afterwards; there a Skip means it reached the target state."""
        result = BulkResult()
        ids = [*dict.fromkeys(await self._selected_ids(selection))]
        docs = await self.mailboxes.get_many(ids)
        settings = await self.read.get_settings()
        writes: list[MailboxWrite] = []
        planned: list[str] = []
        for mailbox_id in ids:
            doc = docs.get(mailbox_id)
            try:
                if doc is None:
                    raise DomainError(404, "no such mailbox", "mailbox_id")
                write = self._write_of(doc, change, settings)
            except Skip:
                continue
            except (TestRefused, DomainError) as exc:
                result.refused.append(_refusal(mailbox_id, exc))
                continue
            writes.append(write)
            planned.append(mailbox_id)
        # In writes of WRITE_CHUNK: each a round trip well inside the client's timeout on a busy server.
        modified = 0
        for i in range(0, len(writes), WRITE_CHUNK):
            modified += await self.mailboxes.bulk_update(writes[i : i + WRITE_CHUNK])
            self.wake()
        if modified == len(writes):
            result.done.extend(planned)
            return result
        for mailbox_id in planned:  # some lost a race: each again alone (idempotent)
            try:
                await self.mutate(mailbox_id, change)
            except Skip:
                pass
            except (TestRefused, DomainError) as exc:
                result.refused.append(_refusal(mailbox_id, exc))
                continue
            result.done.append(mailbox_id)
        return result

    async def _bulk(
        self, selection: Selection, change: Mutation, result: BulkResult | None = None
    ) -> BulkResult:
        result = result or BulkResult()
        for mailbox_id in await self._selected_ids(selection):
            try:
                await self.mutate(mailbox_id, change)
            except Skip:
                continue
            except (TestRefused, DomainError) as exc:
                result.refused.append(_refusal(mailbox_id, exc))
                continue
            result.done.append(mailbox_id)
        return result

    # ---- update / deactivate ----------------------------------------------------------------

    async def update(self, mailbox_id: str, patch: MailboxPatch) -> MailboxView:
        admit_fields(set(patch.model_fields_set))
        current = await self._get_doc(mailbox_id)
        if patch.model_fields_set & CREDENTIAL_FIELDS:
            admit(current, "mailboxes:credentials")
        if "profile_id" in patch.model_fields_set:
            await self._check_profile(patch.profile_id)
        current = await self._get_doc(mailbox_id)
        profile_id = patch.profile_id if "profile_id" in patch.model_fields_set else current.profile_id
        act = patch.act_delivery if "act_delivery" in patch.model_fields_set else None
        act_value = act if act is not None else current.act_delivery
        profile = await self.profiles.find_quietly(profile_id) if profile_id else None
        if act_value is DeliveryMethod.SERVER_SIDE_SYNC and profile_id:
            _check_act(act_value, profile, "act_delivery")
        destination = destination_of(profile) if profile is not None else None
        now = utcnow()

        def change(doc: MailboxDoc, _: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            given = {name: getattr(patch, name) for name in CLIENT_FIELDS if name in patch.model_fields_set}
            if "owner" in patch.model_fields_set and patch.owner is not None:
                given["owner"] = patch.owner
            new = doc.model_copy(update=given)
            moved = new.profile_id != doc.profile_id
            if new.profile_id != profile_id:
                raise DomainError(409, "the mailbox changed concurrently; retry", "profile_id")
            credentials, logins = dict(doc.credentials), dict(doc.logins)
            for direction, attr in ((INCOMING, "credentials"), (OUTGOING, "outgoing_credentials")):
                if attr not in patch.model_fields_set:
                    if moved:
                        moved_to = _profile_change_logins(doc, profile)
                        if direction in moved_to.credentials:
                            credentials[direction] = moved_to.credentials[direction]
                        if direction in moved_to.logins:
                            logins[direction] = moved_to.logins[direction]
                    continue
                usable = not moved and profile is not None and login_usable_for(doc.login(direction), profile)
                try:
                    ct, login = patch_login(
                        self.rings.at_rest, doc, direction, getattr(patch, attr), now, destination, usable
                    )
                except CredentialsUnreadable:
                    raise DomainError(
                        422, "the stored password cannot be read: give a new one", f"{attr}.password"
                    ) from None
                except ValueError as exc:
                    raise DomainError(422, f"{exc} is required: none is stored", f"{attr}.{exc}") from None
                credentials[direction] = ct
                logins[direction] = login
            new = new.model_copy(update={"credentials": credentials, "logins": logins})
            if moved:
                new = _reset_tests(new)  # a new server must be tested before it is used
            return new, [MailboxUpdated(mailbox=doc.snapshot())]

        return (await self.mutate(mailbox_id, change)).view()

    async def deactivate(self, mailbox_id: str) -> MailboxView:
        def change(doc: MailboxDoc, _: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            return _reset_tests(doc.model_copy(update={"active": False})), [
                MailboxUpdated(mailbox=doc.snapshot())
            ]

        return (await self.mutate(mailbox_id, change)).view()

    # ---- approval ----------------------------------------------------------------------------

    async def set_approval(self, selection: Selection, approval: Approval) -> BulkResult:
        now = utcnow()

        def change(doc: MailboxDoc, _: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            if doc.approval == approval:
                raise Skip
            events: list[Event] = [MailboxUpdated(mailbox=doc.snapshot())]
            new = doc.model_copy(update={"approval": approval})
            if approval == "approved":
                events.append(MailboxApproved(mailbox_id=doc.id, email=doc.email, approved_at=now))
            else:
                new = new.model_copy(update={"enabled_incoming": False, "enabled_outgoing": False})
            return new, events

        return await self._bulk_at_once(selection, change)

    # ---- Test & Enable -----------------------------------------------------------------------

    def _test_change(
        self,
        result: BulkResult,
        profiles: dict[str, ProfileSnapshot],
        extra: Mutation | None = None,
        smtp_mode: SmtpMode | None = None,
    ) -> Mutation:
        """Request a test (after ``extra``'s change, whose events go first)."""

        def change(doc: MailboxDoc, settings: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            merged, events = extra(doc, settings) if extra else (doc, [])
            profile = profiles.get(merged.profile_id or "")
            req = build_request(merged, profile, settings, self.rings, utcnow(), smtp_mode=smtp_mode)
            result.test_ids[doc.id] = req.test_id
            pending = pending_test(req, self.result_watchdog_s)
            return merged.model_copy(update=dict(pending)), [*events, req]

        return change

    async def _load_profiles(self, ids: set[str]) -> dict[str, ProfileSnapshot]:
        """The profiles tests will use (with their sealed login), asked for when the read model lags."""
        out: dict[str, ProfileSnapshot] = {}
        for pid in ids - {""}:
            try:
                profile = await self.profiles.find(pid, with_login=True)
            except ProfileUnavailable:
                raise DomainError(503, UNAVAILABLE, "profile_id") from None
            if profile is not None:
                out[pid] = profile
        return out

    async def test_one(self, mailbox_id: str, smtp_mode: SmtpMode | None = None) -> TestAccepted:
        """Test & Enable one mailbox; ``smtp_mode`` overrides the profile's for this test."""
        doc = await self._get_doc(mailbox_id)
        admit(doc, "mailboxes:test")
        profiles = await self._load_profiles({doc.profile_id or ""})
        result = BulkResult()
        try:
            await self.mutate(mailbox_id, self._test_change(result, profiles, smtp_mode=smtp_mode))
        except TestRefused as exc:
            raise DomainError(exc.status, exc.message, exc.field) from None
        return TestAccepted(mailbox_id=mailbox_id, test_id=result.test_ids[mailbox_id], attempt=1)

    async def retest_incoming(self, env: Envelope[MailboxSyncFailed]) -> None:
        """sync-svc could not sync this mailbox (an episode began or changed its code): test its
        incoming side again, so the test policy decides (retry or disable), the Incoming Email
        Status follows and alert-svc alerts, once per episode."""
        await self._retest(env.data.mailbox.mailbox_id, INCOMING)

    async def retest_outgoing(self, env: Envelope[MailboxSendLoginRefused]) -> None:
        """sender-svc's SMTP server refused the mailbox's login: test its outgoing side again, so
        the test policy decides (retry or disable), the Outgoing Email Status follows and
        alert-svc alerts."""
        await self._retest(env.data.mailbox.mailbox_id, OUTGOING)

    async def _retest(self, mailbox_id: str, direction: str) -> None:
        """Test one side again; nothing when a test is pending or that side is not enabled."""
        doc = await self.mailboxes.get(mailbox_id)
        if doc is None or doc.pending_test_id or not _enabled(doc, direction):
            return
        profiles = await self._load_profiles({doc.profile_id or ""})

        def change(doc: MailboxDoc, settings: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            if doc.pending_test_id or not _enabled(doc, direction):
                raise TestRefused("not_applicable", f"a test is pending or {direction} is disabled")
            profile = profiles.get(doc.profile_id or "")
            req = build_request(doc, profile, settings, self.rings, utcnow(), directions=[direction])
            return doc.model_copy(update=dict(pending_test(req, self.result_watchdog_s))), [req]

        try:
            await self.mutate(mailbox_id, change)
        except TestRefused as exc:
            log.info(
                "no re-test after a failure elsewhere",
                extra={"mailbox_id": mailbox_id, "direction": direction, "reason": exc.code},
            )

    async def test_many(self, selection: Selection) -> BulkResult:
        profiles = await self._load_profiles(await self._profile_ids(selection))
        result = BulkResult()
        change = self._test_change(result, profiles, smtp_mode=selection.smtp_mode)
        return await self._bulk(selection, change, result)

    async def _profile_ids(self, selection: Selection) -> set[str]:
        if selection.filter is not None and selection.filter.profile_id is not None:
            return {selection.filter.profile_id}
        ids = selection.mailbox_ids or await self.mailboxes.select_ids(
            selection.filter or MailboxFilter(), self.max_selection
        )
        settings = await self.read.get_settings()
        out = await self.mailboxes.profile_ids_of(ids)
        if settings.default_profile_id:
            out.add(settings.default_profile_id)
        return out

    async def apply_defaults(self, selection: Selection) -> BulkResult:
        """Set the org's default profile and delivery methods, then Test & Enable each mailbox."""
        settings = await self.read.get_settings()
        if settings.default_profile_id is None:
            raise DomainError(
                409, "the organisation has no default email server profile", "default_profile_id"
            )
        profiles = await self._load_profiles({settings.default_profile_id})

        def defaults(doc: MailboxDoc, s: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            if s.default_profile_id is None:
                raise TestRefused("no_default_profile", "the organisation has no default profile")
            default = profiles.get(s.default_profile_id)
            if act_sync_refused(s.act_delivery, _protocol(default)):
                raise TestRefused(ACT_CODE, ACT_NOT_SUPPORTED, "act_delivery", 422)
            # A first profile stamps the logins; a move keeps them, each still checked against
            # the destination it was entered for when the test is built.
            new = doc if doc.profile_id else _profile_change_logins(doc, default)
            new = new.model_copy(
                update={
                    "profile_id": s.default_profile_id,
                    "incoming_delivery": s.incoming_delivery,
                    "outgoing_delivery": s.outgoing_delivery,
                    "act_delivery": s.act_delivery,
                }
            )
            return _reset_tests(new), [MailboxUpdated(mailbox=doc.snapshot())]

        result = BulkResult()
        change = self._test_change(result, profiles, defaults, selection.smtp_mode)
        return await self._bulk(selection, change, result)

    async def change_many(self, req: ChangeManyRequest) -> BulkResult:
        wanted = req.changes
        new_profile: ProfileSnapshot | None = None
        if "profile_id" in wanted.model_fields_set:
            new_profile = await self._check_profile(wanted.profile_id, "changes.profile_id")
        profiles = await self._load_act_profiles(req, new_profile)

        def change(doc: MailboxDoc, _: SettingsSnapshot) -> tuple[MailboxDoc, list[Event]]:
            new = doc.model_copy(update={name: getattr(wanted, name) for name in wanted.model_fields_set})
            profile = profiles.get(new.profile_id or "")
            if act_sync_refused(new.act_delivery, _protocol(profile)):
                raise TestRefused(ACT_CODE, ACT_NOT_SUPPORTED, "changes.act_delivery", 422)
            if new.profile_id != doc.profile_id:
                moved = _profile_change_logins(doc, new_profile)
                new = _reset_tests(
                    new.model_copy(update={"credentials": moved.credentials, "logins": moved.logins})
                )
            return new, [MailboxUpdated(mailbox=doc.snapshot())]

        return await self._bulk(req.selection, change)

    async def _load_act_profiles(
        self, req: ChangeManyRequest, new_profile: ProfileSnapshot | None
    ) -> dict[str, ProfileSnapshot]:
        """The profiles whose protocol decides whether ACT server-side sync may be set (only then)."""
        if new_profile is not None:
            return {new_profile.profile_id: new_profile}
        if req.changes.act_delivery is not DeliveryMethod.SERVER_SIDE_SYNC:
            return {}
        out: dict[str, ProfileSnapshot] = {}
        for pid in await self._profile_ids(req.selection):
            if (profile := await self.profiles.find_quietly(pid)) is not None:
                out[pid] = profile
        return out


ACT_CODE = "act_not_supported"


def _enabled(doc: MailboxDoc, direction: str) -> bool:
    return doc.enabled_incoming if direction == INCOMING else doc.enabled_outgoing


def _refusal(mailbox_id: str, exc: TestRefused | DomainError) -> Refusal:
    if isinstance(exc, TestRefused):
        return Refusal(mailbox_id=mailbox_id, code=exc.code, message=exc.message)
    return Refusal(mailbox_id=mailbox_id, code=str(exc.status), message=exc.detail)


def _protocol(profile: ProfileSnapshot | None) -> str | None:
    return profile.incoming_protocol.value if profile is not None else None


def _check_act(act_delivery: str, profile: ProfileSnapshot | None, field: str) -> None:
    """Refuse ACT server-side sync on a mailbox whose profile is IMAP or POP3, as the org settings do."""
    if act_sync_refused(act_delivery, _protocol(profile)):
        raise DomainError(422, ACT_NOT_SUPPORTED, field)


def _profile_change_logins(doc: MailboxDoc, new_profile: ProfileSnapshot | None) -> MailboxDoc:
    """What a change of profile does to the stored logins.

    A mailbox's first profile is where its logins were entered for: they are stamped with that
    profile's destination (so a later edit of the profile that leaves the destination alone, a
    description say, never invalidates them). Moving from one profile to another forgets them.
    """
    if doc.profile_id:
        return _forget_logins(doc)
    if new_profile is None:
        return doc
    destination = destination_of(new_profile)
    logins = dict(doc.logins)
    for direction, ct in doc.credentials.items():
        login = doc.login(direction)
        if ct is not None and login is not None and login.destination is None:
            logins[direction] = login.model_copy(update={"destination": destination})
    return doc.model_copy(update={"logins": logins})


def _forget_logins(doc: MailboxDoc) -> MailboxDoc:
    """A login goes only to the server it was entered for: moving a mailbox needs its passwords again."""
    credentials, logins = dict(doc.credentials), dict(doc.logins)
    for direction, ct in doc.credentials.items():
        if ct is not None:
            credentials[direction] = None
            logins[direction] = (doc.login(direction) or StoredLogin()).model_copy(
                update={"destination": None}
            )
    return doc.model_copy(update={"credentials": credentials, "logins": logins})


def _reset_tests(doc: MailboxDoc) -> MailboxDoc:
    """A mailbox whose server changed (or that is deactivated) starts untested and disabled."""
    return doc.model_copy(
        update={
            "incoming_status": TestStatus.NOT_RUN,
            "outgoing_status": TestStatus.NOT_RUN,
            "enabled_incoming": False,
            "enabled_outgoing": False,
            "test_scheduled": False,
            "tests_reset_at": utcnow(),
            "pending_test_id": None,
            "pending_attempt": None,
            "pending_job_id": None,
            "pending_directions": [],
            "next_retry_at": None,
            "retry_attempt": None,
            "retry_directions": [],
            "retry_count": 0,
            "disabled_reason": None,
        }
    )
