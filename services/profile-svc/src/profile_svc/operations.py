"""The operations of profile-svc, shared by the HTTP routes and the NATS request-reply handlers.

The default profile has one truth: ``settings.default_profile_id``. Switching it is a single
conditional write of the settings document (so concurrent switches leave exactly one default);
``is_default`` on a profile document is a projection of it, brought in line by
:meth:`Operations.sync_default_flags` (after each switch and at start), each flip a profile write
with its own ProfileUpdated. The API always answers ``is_default`` from the truth.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import Envelope
from contracts.events import (
    EmailSettingsChanged,
    Event,
    MailboxSnapshot,
    ProfileBasics,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
)
from contracts.models import ACT_NOT_SUPPORTED, DeliveryMethod, Direction, SealedSecret
from mailwarden_runtime.auth import current_actor
from mailwarden_runtime.crypto import SealError
from mailwarden_runtime.http import DomainError, FieldProblem
from mailwarden_runtime.mailboxuses import MailboxUse
from mailwarden_runtime.outbox import OutboxEntry, outbox_entry
from mailwarden_runtime.sealing import destination_fingerprint
from profile_svc import documents as docs
from profile_svc.credentials import CredentialBox
from profile_svc.documents import ProfileDoc
from profile_svc.errors import FieldsRefused, not_found, refuse
from profile_svc.models import (
    DeleteResult,
    ListQuery,
    ProfileCreate,
    ProfilePage,
    ProfilePatch,
    ProfileView,
    SettingsIn,
    SettingsView,
)
from profile_svc.ports import allowed_ports_for
from profile_svc.rules import Draft, port_problems, requested, resolve
from profile_svc.store import Stores
from profile_svc.store.profiles import NameTaken, ProfileFilter

log = logging.getLogger(__name__)

MakeEnvelope = Callable[[Event], Envelope[Any]]
ACT_REFUSED = ACT_NOT_SUPPORTED
NAME_TAKEN = "another profile already has this name"
RETRIES = 30


UNREADABLE = (
    "the stored credentials cannot be opened (altered, or sealed with a key no longer in "
    "MW_CREDENTIAL_KEYS): set them again"
)


REENTER = (
    "the server (host, port, TLS mode, certificate checks or plaintext login) changes: stored passwords "
    "are never sent to a new destination, give this login again in the same request"
)


def destination(profile: ProfileBasics) -> str:
    """Where and how the profile's logins are sent (see :mod:`mailwarden_runtime.sealing`)."""
    return destination_fingerprint(
        profile.incoming_protocol.value,
        profile.incoming,
        profile.outgoing,
        profile.advanced.verify_tls,
        profile.advanced.allow_plaintext_auth,
    )


def redirect_problems(doc: ProfileDoc, draft: Draft) -> list[FieldProblem]:
    """A stored login may not follow the profile to another destination: it must be given again."""
    if not draft.keep_logins or destination(draft) == destination(doc):
        return []
    return [FieldProblem(field=f"credentials.{d.value}", message=REENTER) for d in sorted(draft.keep_logins)]


def actor() -> str:
    """Who changes a document: the caller's token subject, or this service for its own changes."""
    return current_actor() or "service:profile-svc"


STAMP: set[str] = {"version", "updated_at", "updated_by"}
"""What every settings write sets anew: not a change by itself."""


def _changed(current: SettingsView, wanted: Mapping[str, object]) -> SettingsView:
    """``current`` with the ``wanted`` fields, validated as a whole."""
    return SettingsView.model_validate(current.model_dump() | dict(wanted))


class Operations:
    def __init__(
        self, stores: Stores, box: CredentialBox, envelope: MakeEnvelope, wake: Callable[[], None]
    ) -> None:
        self._stores = stores
        self._box = box
        self._envelope = envelope
        self._wake = wake

    @property
    def stores(self) -> Stores:
        return self._stores

    @property
    def box(self) -> CredentialBox:
        return self._box

    def _entry(self, event: Event) -> OutboxEntry:
        return outbox_entry(self._envelope(event))

    # settings

    async def ensure_settings(self) -> SettingsView:
        """Create the default settings at first start, announcing them so consumers get the defaults."""
        settings = await self._stores.settings.get_settings()
        if settings is not None:
            return settings
        first = SettingsView(version=1, updated_at=docs.now_ms(datetime.now(UTC)), updated_by=actor())
        event = EmailSettingsChanged(settings=first.snapshot())
        if await self._stores.settings.init_settings(first, [self._entry(event)]):
            log.info("default email settings created")
            self._wake()
        settings = await self._stores.settings.get_settings()
        if settings is None:
            raise RuntimeError("settings vanished right after creation")
        return settings

    async def get_settings(self) -> SettingsView:
        return await self.ensure_settings()

    async def put_settings(self, body: SettingsIn) -> SettingsView:
        problems: list[FieldProblem] = []
        if body.port_preset == "custom" and not body.allowed_ports:
            problems.append(
                FieldProblem(field="allowed_ports", message='is required with port_preset "custom"')
            )
        if body.port_preset != "custom" and body.allowed_ports is not None:
            problems.append(
                FieldProblem(field="allowed_ports", message='may only be given with port_preset "custom"')
            )
        if (
            body.default_profile_id is not None
            and await self._stores.profiles.get_profile(body.default_profile_id) is None
        ):
            problems.append(FieldProblem(field="default_profile_id", message="no such profile"))
        if body.act_delivery is DeliveryMethod.SERVER_SIDE_SYNC and body.default_profile_id is not None:
            problems.append(FieldProblem(field="act_delivery", message=ACT_REFUSED))
        if problems:
            raise FieldsRefused(problems)
        allowed = allowed_ports_for(body.port_preset, body.allowed_ports)
        await self._refuse_if_profiles_outside(allowed)
        wanted = body.model_dump(exclude={"allowed_ports"}) | {
            "allowed_ports": allowed,
            "alert_levels": list(dict.fromkeys(body.alert_levels)),
        }
        result = await self._write_settings(lambda current: _changed(current, wanted))
        await self.sync_default_flags()
        return result

    async def _refuse_if_profiles_outside(self, allowed: list[int]) -> None:
        """A narrower allow-list must not silently strand profiles: refuse and name them."""
        outside, total = await self._stores.profiles.profiles_outside(allowed)
        if not total:
            return
        named = ", ".join(
            f"{d.name!r} (incoming {d.incoming.port}, outgoing {d.outgoing.port})" for d in outside[:5]
        )
        more = f" and {total - 5} more" if total > 5 else ""
        raise refuse(
            "allowed_ports",
            f"{total} profile(s) use ports outside this allow-list: {named}{more}; change their ports first",
            status=409,
        )

    async def _write_settings(self, change: Callable[[SettingsView], SettingsView | None]) -> SettingsView:
        """Apply ``change`` to the current settings with optimistic concurrency; no write when nothing changes.

        ``change`` sees fresh settings on every attempt (its answer: the settings it wants, None: no
        change) and may raise to refuse.
        """
        for _ in range(RETRIES):
            current = await self.ensure_settings()
            wanted = change(current)
            if wanted is None or wanted.model_dump(exclude=STAMP) == current.model_dump(exclude=STAMP):
                return current
            new = wanted.model_copy(
                update={
                    "version": current.version + 1,
                    "updated_at": docs.now_ms(datetime.now(UTC)),
                    "updated_by": actor(),
                }
            )
            event = EmailSettingsChanged(settings=new.snapshot())
            if await self._stores.settings.update_settings(current.version, new, [self._entry(event)]):
                self._wake()
                return new
            await asyncio.sleep(random.uniform(0, 0.01))
        raise DomainError(409, "the settings kept changing concurrently; retry")

    async def _change_default(self, target: str | None, only_if: str | None = None) -> None:
        """Make ``target`` the default (None: no default); with ``only_if``, only while that one is it."""

        def change(current: SettingsView) -> SettingsView | None:
            if only_if is not None and current.default_profile_id != only_if:
                return None
            if target is not None and current.act_delivery is DeliveryMethod.SERVER_SIDE_SYNC:
                raise refuse("is_default", ACT_REFUSED)
            return _changed(current, {"default_profile_id": target})

        await self._write_settings(change)
        await self.sync_default_flags()

    async def sync_default_flags(self) -> None:
        """Bring every profile's ``is_default`` projection in line with the settings (idempotent)."""
        for _ in range(RETRIES):
            target = (await self.ensure_settings()).default_profile_id
            for doc in await self._stores.profiles.profiles_flagged_default():
                if doc.id != target:
                    await self._flip_default(doc.id, False)
            if target is not None:
                await self._flip_default(target, True)
            if (await self.ensure_settings()).default_profile_id == target:
                return
        log.warning("default flags did not settle; they will be synced at the next change or start")

    async def _flip_default(self, profile_id: str, flag: bool) -> None:
        for _ in range(RETRIES):
            doc = await self._stores.profiles.get_profile(profile_id)
            if doc is None or doc.is_default == flag:
                return
            new = doc.model_copy(
                update={
                    "is_default": flag,
                    "version": doc.version + 1,
                    "updated_at": docs.now_ms(datetime.now(UTC)),
                }
            )
            event = ProfileUpdated(profile=new.snapshot(self._box))
            changed = {"is_default", "version", "updated_at"}
            if await self._stores.profiles.update_profile(new, doc.version, changed, [self._entry(event)]):
                self._wake()
                return

    # profiles

    async def _checked(self, draft: Draft, problems: list[FieldProblem], newly_default: bool) -> SettingsView:
        settings = await self.ensure_settings()
        problems = problems + port_problems(draft, settings.allowed_ports)
        if newly_default and settings.act_delivery is DeliveryMethod.SERVER_SIDE_SYNC:
            problems.append(FieldProblem(field="is_default", message=ACT_REFUSED))
        if problems:
            raise FieldsRefused(problems)
        return settings

    def _logins(
        self, profile_id: str, draft: Draft, stored: dict[Direction, SealedSecret]
    ) -> dict[Direction, SealedSecret]:
        out = {d: stored[d] for d in draft.keep_logins if d in stored}
        for direction, login in draft.new_logins.items():
            out[direction] = self._box.seal(profile_id, direction, login)
        return out

    async def create(self, body: ProfileCreate) -> ProfileView:
        draft, problems = resolve(body)
        await self._checked(draft, problems, draft.is_default)
        profile_id = f"prf_{uuid.uuid4().hex}"
        now = docs.now_ms(datetime.now(UTC))
        doc = ProfileDoc.new(profile_id, draft, self._logins(profile_id, draft, {}), now)
        doc = doc.model_copy(update={"created_by": actor(), "updated_by": actor()})
        event = ProfileCreated(profile=doc.snapshot(self._box))
        try:
            await self._stores.profiles.insert_profile(doc, [self._entry(event)])
        except NameTaken:
            raise refuse("name", NAME_TAKEN, status=409) from None
        self._wake()
        log.info("profile created", extra={"profile_id": profile_id})
        if draft.is_default:
            await self._change_default(profile_id)
        return await self.get(profile_id)

    async def get(self, profile_id: str) -> ProfileView:
        doc = await self._stores.profiles.get_profile(profile_id)
        if doc is None:
            raise not_found()
        settings = await self.ensure_settings()
        return doc.view(settings.default_profile_id == profile_id)

    async def list(self, q: ListQuery) -> ProfilePage:
        settings = await self.ensure_settings()
        default = settings.default_profile_id
        which = ProfileFilter(
            name_contains=q.name_contains,
            owner_id=q.owner_id,
            incoming_protocol=q.incoming_protocol.value if q.incoming_protocol else None,
            credential_source=q.credential_source.value if q.credential_source else None,
            ids=([default] if default else []) if q.is_default is True else None,
            not_id=default if q.is_default is False else None,
        )
        found, total = await self._stores.profiles.list_profiles(which, q.limit, q.offset)
        items = [d.view(d.id == default) for d in found]
        return ProfilePage(items=items, total=total, limit=q.limit, offset=q.offset)

    async def update(self, profile_id: str, patch: ProfilePatch) -> ProfileView:
        for _ in range(RETRIES):
            doc = await self._stores.profiles.get_profile(profile_id)
            if doc is None:
                raise not_found()
            was_default = (await self.ensure_settings()).default_profile_id == profile_id
            draft, problems = resolve(requested(doc.as_request(was_default), patch), doc.credentials)
            problems += redirect_problems(doc, draft)
            await self._checked(draft, problems, draft.is_default and not was_default)
            new = doc.with_draft(draft, self._logins(profile_id, draft, doc.credentials))
            same = new.stored(include=docs.PROFILE_FIELDS) == doc.stored(include=docs.PROFILE_FIELDS)
            if not (same and self._same_logins(profile_id, doc.credentials, new.credentials)):
                new = new.model_copy(
                    update={
                        "version": doc.version + 1,
                        "updated_at": docs.now_ms(datetime.now(UTC)),
                        "updated_by": actor(),
                    }
                )
                try:
                    event = ProfileUpdated(profile=new.snapshot(self._box))
                except SealError:
                    raise refuse("credentials", UNREADABLE, status=409) from None
                changed = {*docs.PROFILE_FIELDS, "credentials", "version", "updated_at", "updated_by"}
                try:
                    ok = await self._stores.profiles.update_profile(
                        new, doc.version, changed, [self._entry(event)]
                    )
                except NameTaken:
                    raise refuse("name", NAME_TAKEN, status=409) from None
                if not ok:
                    await asyncio.sleep(random.uniform(0, 0.01))
                    continue
                self._wake()
                log.info("profile updated", extra={"profile_id": profile_id})
            if draft.is_default and not was_default:
                await self._change_default(profile_id)
            elif was_default and not draft.is_default:
                await self._change_default(None, only_if=profile_id)
            return await self.get(profile_id)
        raise DomainError(409, "the profile kept changing concurrently; retry")

    def _same_logins(
        self, profile_id: str, stored: dict[Direction, SealedSecret], logins: dict[Direction, SealedSecret]
    ) -> bool:
        """True when the logins to store equal the stored ones in clear (a re-sent secret is no change)."""
        if set(logins) != set(stored):
            return False
        for direction, sealed in stored.items():
            new = logins[direction]
            if new == sealed:
                continue
            try:
                if self._box.open(profile_id, direction, new) != self._box.open(
                    profile_id, direction, sealed
                ):
                    return False
            except SealError:  # the stored one does not open: replacing it is a change
                return False
        return True

    async def delete(self, profile_id: str) -> DeleteResult:
        for _ in range(RETRIES):
            doc = await self._stores.profiles.get_profile(profile_id)
            if doc is None:
                raise not_found()
            if (await self.ensure_settings()).default_profile_id == profile_id:
                raise refuse(
                    "profile_id",
                    "this is the default profile for new mailboxes: choose another default first",
                    409,
                )
            used = await self._stores.usage.usage_count(profile_id)
            if used:
                raise refuse(
                    "profile_id",
                    f"the profile is used by {used} mailbox{'es' if used != 1 else ''}: "
                    "move them to another profile first",
                    409,
                )
            now = docs.now_ms(datetime.now(UTC))
            gone = doc.model_copy(
                update={
                    "live": False,
                    "deleted_at": now,
                    "version": doc.version + 1,
                    "updated_at": now,
                    "updated_by": actor(),
                }
            )
            changed = {"live", "deleted_at", "version", "updated_at", "updated_by"}
            event = ProfileDeleted(profile_id=profile_id)
            if await self._stores.profiles.update_profile(
                gone, doc.version, changed, [self._entry(event)], unset=("credentials",)
            ):
                self._wake()
                log.info("profile deleted", extra={"profile_id": profile_id})
                return DeleteResult(profile_id=profile_id, deleted=True)
        raise DomainError(409, "the profile kept changing concurrently; retry")

    # the usage read model

    async def mailboxes_changed(self, mailboxes: Sequence[MailboxSnapshot]) -> None:
        """Mailbox events (a bulk set-up's come in batches of hundreds): one insert for them all."""
        await self._stores.usage.record_usages([MailboxUse.of(m) for m in mailboxes])
