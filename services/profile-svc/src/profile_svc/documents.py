"""Conversions between stored documents, API views and event snapshots (no I/O)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.events import AdvancedOptions, ProfileSnapshot, SettingsSnapshot
from contracts.models import Direction, SealedSecret
from profile_svc.credentials import CredentialBox
from profile_svc.models import ProfileView, SettingsView
from profile_svc.rules import Draft

Doc = dict[str, Any]

# The stored profile fields a write may change (credentials aside).
PROFILE_FIELDS = (
    "name",
    "name_key",
    "description",
    "owner",
    "incoming_protocol",
    "incoming",
    "outgoing",
    "use_same_settings_for_outgoing",
    "credential_source",
    "advanced",
)

SETTINGS_FIELDS = tuple(f for f in SettingsView.model_fields if f not in ("version", "updated_at"))


def draft_fields(draft: Draft, name_key: str) -> Doc:
    return {
        "name": draft.name,
        "name_key": name_key,
        "description": draft.description,
        "owner": draft.owner.model_dump(mode="json"),
        "incoming_protocol": draft.incoming_protocol.value,
        "incoming": draft.incoming.model_dump(mode="json"),
        "outgoing": draft.outgoing.model_dump(mode="json"),
        "use_same_settings_for_outgoing": draft.use_same,
        "credential_source": draft.credential_source.value,
        "advanced": draft.advanced.model_dump(mode="json"),
    }


def stored_logins(doc: Doc) -> dict[Direction, SealedSecret]:
    return {Direction(d): SealedSecret.model_validate(s) for d, s in (doc.get("credentials") or {}).items()}


def view(doc: Doc, is_default: bool) -> ProfileView:
    return ProfileView(
        profile_id=doc["_id"],
        name=doc["name"],
        description=doc.get("description", ""),
        owner=doc["owner"],
        incoming_protocol=doc["incoming_protocol"],
        incoming=doc["incoming"],
        outgoing=doc["outgoing"],
        use_same_settings_for_outgoing=doc["use_same_settings_for_outgoing"],
        credential_source=doc["credential_source"],
        has_credentials=bool(doc.get("credentials")),
        is_default=is_default,
        advanced=AdvancedOptions.model_validate(doc.get("advanced") or {}),
        version=doc["version"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


def snapshot(doc: Doc, box: CredentialBox) -> ProfileSnapshot:
    """The profile as events carry it: credentials only sealed with the transit ring."""
    return ProfileSnapshot(
        profile_id=doc["_id"],
        name=doc["name"],
        description=doc.get("description", ""),
        owner=doc["owner"],
        incoming_protocol=doc["incoming_protocol"],
        incoming=doc["incoming"],
        outgoing=doc["outgoing"],
        use_same_settings_for_outgoing=doc["use_same_settings_for_outgoing"],
        credential_source=doc["credential_source"],
        sealed_credentials=box.for_transit(
            doc["_id"], stored_logins(doc), doc["use_same_settings_for_outgoing"]
        ),
        is_default=bool(doc.get("is_default")),
        advanced=AdvancedOptions.model_validate(doc.get("advanced") or {}),
        version=doc["version"],
        updated_at=doc["updated_at"],
    )


def settings_view(doc: Doc) -> SettingsView:
    return SettingsView.model_validate({k: v for k, v in doc.items() if k in SettingsView.model_fields})


def settings_snapshot(settings: SettingsView) -> SettingsSnapshot:
    return SettingsSnapshot.model_validate(settings.model_dump(exclude={"port_preset"}))


def settings_doc(settings: SettingsView) -> Doc:
    return settings.model_dump(mode="json") | {"updated_at": settings.updated_at}


def now_ms(now: datetime) -> datetime:
    """MongoDB keeps milliseconds: round so a stored time reads back equal."""
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
