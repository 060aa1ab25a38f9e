"""PATCH applied with the models: the stored profile as a request, the patch's fields over it."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.models import CredentialSource, Endpoint, IncomingProtocol, Owner, OwnerKind, TlsMode
from profile_svc.documents import ProfileDoc
from profile_svc.models import ProfilePatch
from profile_svc.rules import requested, resolve

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def stored(**changes: object) -> ProfileDoc:
    doc = ProfileDoc.model_validate(
        {
            "_id": "prf_1",
            "name": "Contoso",
            "name_key": "contoso",
            "owner": Owner(kind=OwnerKind.QUEUE, id="ops", name="Ops"),
            "incoming_protocol": IncomingProtocol.IMAP,
            "incoming": Endpoint(host="imap.example.org", port=993, tls=TlsMode.IMPLICIT),
            "outgoing": Endpoint(host="imap.example.org", port=465, tls=TlsMode.IMPLICIT),
            "use_same_settings_for_outgoing": True,
            "credential_source": CredentialSource.MAILBOX,
            "version": 3,
            "created_at": NOW,
            "updated_at": NOW,
        }
    )
    return doc.model_copy(update=changes)


def patch(body: dict[str, object]) -> ProfilePatch:
    return ProfilePatch.model_validate(body)


def test_a_default_port_follows_a_changed_tls_mode_and_a_chosen_one_stays() -> None:
    draft, problems = resolve(requested(stored().as_request(False), patch({"incoming": {"tls": "starttls"}})))
    assert not problems and draft.incoming == Endpoint(
        host="imap.example.org", port=143, tls=TlsMode.STARTTLS
    )
    assert draft.outgoing == Endpoint(host="imap.example.org", port=587, tls=TlsMode.STARTTLS)
    chosen = stored(incoming=Endpoint(host="imap.example.org", port=1993, tls=TlsMode.IMPLICIT))
    draft, _ = resolve(requested(chosen.as_request(False), patch({"incoming": {"tls": "starttls"}})))
    assert draft.incoming.port == 1993


def test_leaving_use_same_keeps_the_stored_outgoing_side_and_joining_it_follows_the_incoming() -> None:
    draft, problems = resolve(
        requested(stored().as_request(False), patch({"use_same_settings_for_outgoing": False}))
    )
    assert not problems and draft.outgoing == Endpoint(
        host="imap.example.org", port=465, tls=TlsMode.IMPLICIT
    )
    separate = stored(
        use_same_settings_for_outgoing=False,
        outgoing=Endpoint(host="smtp.example.org", port=587, tls=TlsMode.STARTTLS),
    )
    draft, problems = resolve(
        requested(separate.as_request(False), patch({"use_same_settings_for_outgoing": True}))
    )
    assert not problems and draft.outgoing == Endpoint(
        host="imap.example.org", port=465, tls=TlsMode.IMPLICIT
    )


def test_null_is_not_sent_and_nested_fields_merge_one_by_one() -> None:
    base = stored().as_request(True)
    merged = requested(
        base,
        patch({"name": None, "description": "new", "advanced": {"verify_tls": None, "connect_timeout_s": 5}}),
    )
    assert merged.name == "Contoso" and merged.description == "new" and merged.is_default is True
    assert merged.advanced.connect_timeout_s == 5 and merged.advanced.verify_tls is True
    assert merged.advanced.max_concurrent_connections == base.advanced.max_concurrent_connections
