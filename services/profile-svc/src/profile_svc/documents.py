"""The stored documents of profile-svc, typed, and what the API and the events show of them (no I/O)."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import ProfileBasics, ProfileSnapshot
from contracts.models import Direction, SealedSecret
from mailwarden_runtime.documents import Stored
from profile_svc.credentials import CredentialBox
from profile_svc.models import AdvancedIn, IncomingIn, OutgoingIn, ProfileCreate, ProfileView, SettingsView
from profile_svc.ports import default_port, service_of
from profile_svc.rules import Draft

Shown = TypeVar("Shown", bound=BaseModel)


class ProfileContent(ProfileBasics):
    """What a profile write (create or update) sets: the fields a :class:`Draft` decides."""

    model_config = ConfigDict(frozen=False, extra="ignore")  # a stored document, not an event

    name_key: str
    credentials: dict[Direction, SealedSecret] = Field(default_factory=dict)

    @classmethod
    def of(cls, draft: Draft, credentials: dict[Direction, SealedSecret]) -> ProfileContent:
        basics = {name: getattr(draft, name) for name in ProfileBasics.model_fields}
        return cls(**basics, name_key=name_key(draft.name), credentials=credentials)


class ProfileDoc(Stored, ProfileContent):
    """A stored email server profile; deleted ones stay as tombstones (``live: false``)."""

    live: bool = True
    is_default: bool = False
    """A projection of ``settings.default_profile_id`` (see profile_svc.operations)."""
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None
    created_by: str = ""
    """Who made it and who changed it last (a token's ``token:<sub>``, or this service): the audit."""
    updated_by: str = ""

    @classmethod
    def new(
        cls, profile_id: str, draft: Draft, credentials: dict[Direction, SealedSecret], now: datetime
    ) -> ProfileDoc:
        content = dict(ProfileContent.of(draft, credentials))
        return cls.model_validate(
            {"_id": profile_id, "version": 1, "created_at": now, "updated_at": now} | content
        )

    def with_draft(self, draft: Draft, credentials: dict[Direction, SealedSecret]) -> ProfileDoc:
        return self.model_copy(update=dict(ProfileContent.of(draft, credentials)))

    def as_request(self, is_default: bool) -> ProfileCreate:
        """The stored profile as a request; a port that is its TLS mode's default is left to derive,
        so it follows a changed protocol or TLS mode."""
        service = service_of(self.incoming_protocol)
        inc, out = self.incoming, self.outgoing
        return ProfileCreate(
            name=self.name,
            description=self.description,
            owner=self.owner,
            incoming_protocol=self.incoming_protocol,
            incoming=IncomingIn(
                host=inc.host, port=_unless(default_port(service, inc.tls), inc.port), tls=inc.tls
            ),
            use_same_settings_for_outgoing=self.use_same_settings_for_outgoing,
            outgoing=OutgoingIn(
                host=out.host, port=_unless(default_port("smtp", out.tls), out.port), tls=out.tls
            ),
            credential_source=self.credential_source,
            is_default=is_default,
            advanced=AdvancedIn.model_validate(self.advanced.model_dump()),
        )

    def _shown(self, shown: type[Shown], /, **own: object) -> Shown:
        """This profile as ``shown`` (the API's view, the events' snapshot): what both show (kept
        under the same names here) and ``own``, that one's own fields."""
        shared = set(ProfileView.model_fields) & set(ProfileSnapshot.model_fields)
        same = {k: getattr(self, k) for k in shared if k in type(self).model_fields}
        return shown.model_validate({"profile_id": self.id, **same, **own})

    def view(self, is_default: bool) -> ProfileView:
        return self._shown(
            ProfileView,
            has_credentials=bool(self.credentials),
            is_default=is_default,
            created_at=self.created_at,
        )

    def snapshot(self, box: CredentialBox) -> ProfileSnapshot:
        """The profile as events carry it: credentials only sealed with the transit ring."""
        sealed = box.for_transit(self.id, self.credentials, self.use_same_settings_for_outgoing)
        return self._shown(ProfileSnapshot, sealed_credentials=sealed)


class ProfileLogins(Stored):
    """Only a profile's sealed logins: what key rotation reads and swaps."""

    credentials: dict[Direction, SealedSecret] = Field(default_factory=dict)


class SettingsDoc(Stored, SettingsView):
    """The organisation's settings as stored (one document, ``_id`` ``org``): the view's fields."""

    model_config = ConfigDict(extra="ignore")  # as stored: what is not a setting (the outbox) is not read

    def view(self) -> SettingsView:
        return SettingsView.model_validate(self.model_dump(exclude={"id"}))


def _unless(default: int, port: int) -> int | None:
    return None if port == default else port


def name_key(name: str) -> str:
    """Names are unique regardless of case and surrounding or repeated spaces."""
    return " ".join(name.split()).casefold()


PROFILE_FIELDS = frozenset(ProfileContent.model_fields) - {"credentials"}
"""The stored fields a profile write may change, credentials aside."""


def now_ms(now: datetime) -> datetime:
    """MongoDB keeps milliseconds: round so a stored time reads back equal."""
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
