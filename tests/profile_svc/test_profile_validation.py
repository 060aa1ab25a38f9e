"""Every profile field is validated: 422 naming the field, nothing stored, no event, no echo."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from profile_svc_helpers import CANARY, Recorder, profile_body

PROFILE_CREDS = {"incoming": {"username": "svc@example.com", "password": CANARY}}

# (what is wrong, overrides of a valid body, the field the refusal must name)
BAD_CREATES: list[tuple[str, dict[str, Any], str]] = [
    ("empty name", {"name": "  "}, "name"),
    ("long name", {"name": "n" * 101}, "name"),
    ("long description", {"description": "d" * 2001}, "description"),
    ("no owner", {"owner": None}, "owner"),
    ("owner kind", {"owner": {"kind": "robot", "id": "u1", "name": "R"}}, "owner.kind"),
    ("owner id", {"owner": {"kind": "user", "id": "bad id!", "name": "R"}}, "owner.id"),
    ("owner email", {"owner": {"kind": "user", "id": "u1", "name": "R", "email": "nope"}}, "owner.email"),
    ("protocol", {"incoming_protocol": "exchange"}, "incoming_protocol"),
    ("host", {"incoming": {"host": "bad host!", "tls": "implicit"}}, "incoming.host"),
    ("port zero", {"incoming": {"host": "imap.example.com", "port": 0}}, "incoming.port"),
    ("port high", {"incoming": {"host": "imap.example.com", "port": 70000}}, "incoming.port"),
    ("tls mode", {"incoming": {"host": "imap.example.com", "tls": "ssl"}}, "incoming.tls"),
    (
        "plaintext without consent",
        {"incoming": {"host": "imap.example.com", "port": 143, "tls": "none"}},
        "incoming.tls",
    ),
    (
        "separate outgoing without host",
        {"use_same_settings_for_outgoing": False, "outgoing": {"port": 587, "tls": "starttls"}},
        "outgoing.host",
    ),
    ("same settings, other host", {"outgoing": {"host": "smtp.other.com"}}, "outgoing.host"),
    ("same settings, other tls", {"outgoing": {"tls": "starttls"}}, "outgoing.tls"),
    ("outgoing port", {"outgoing": {"port": -1}}, "outgoing.port"),
    ("credential source", {"credential_source": "oauth2"}, "credential_source"),
    ("profile creds missing", {"credential_source": "profile"}, "credentials.incoming"),
    ("creds on mailbox source", {"credentials": PROFILE_CREDS}, "credentials"),
    (
        "empty password",
        {"credential_source": "profile", "credentials": {"incoming": {"username": "u", "password": ""}}},
        "credentials.incoming.password",
    ),
    (
        "outgoing login with same settings",
        {
            "credential_source": "profile",
            "credentials": {**PROFILE_CREDS, "outgoing": PROFILE_CREDS["incoming"]},
        },
        "credentials.outgoing",
    ),
    (
        "separate outgoing without login",
        {
            "credential_source": "profile",
            "credentials": PROFILE_CREDS,
            "use_same_settings_for_outgoing": False,
            "outgoing": {"host": "smtp.example.com", "port": 587, "tls": "starttls"},
        },
        "credentials.outgoing",
    ),
    ("default flag", {"is_default": "maybe"}, "is_default"),
    ("process from", {"advanced": {"process_email_from": "yesterday"}}, "advanced.process_email_from"),
    (
        "sent copies on POP3",
        {"incoming_protocol": "pop3", "advanced": {"save_sent_copy": True}},
        "advanced.save_sent_copy",
    ),
    ("sent folder empty", {"advanced": {"save_sent_copy": True, "sent_folder": ""}}, "advanced.sent_folder"),
    ("sent folder non-ASCII", {"advanced": {"sent_folder": "Gesendete Objekte ✓"}}, "advanced.sent_folder"),
    ("polling high", {"advanced": {"min_polling_interval_min": 1441}}, "advanced.min_polling_interval_min"),
    ("polling negative", {"advanced": {"min_polling_interval_min": -1}}, "advanced.min_polling_interval_min"),
    ("connections 0", {"advanced": {"max_concurrent_connections": 0}}, "advanced.max_concurrent_connections"),
    (
        "connections 301",
        {"advanced": {"max_concurrent_connections": 301}},
        "advanced.max_concurrent_connections",
    ),
    ("timeout 0", {"advanced": {"connect_timeout_s": 0}}, "advanced.connect_timeout_s"),
    ("timeout 101", {"advanced": {"connect_timeout_s": 101}}, "advanced.connect_timeout_s"),
    (
        "move failed",
        {"advanced": {"move_failed_to_undeliverable": "sometimes"}},
        "advanced.move_failed_to_undeliverable",
    ),
    (
        "alert flag",
        {"advanced": {"email_alert_on_majority_failure": "x"}},
        "advanced.email_alert_on_majority_failure",
    ),
    (
        "tls off without reason",
        {"advanced": {"verify_tls": False}},
        "advanced.tls_verification_exception",
    ),
    (
        "tls off, reason too short",
        {"advanced": {"verify_tls": False, "tls_verification_exception": "lab"}},
        "advanced.tls_verification_exception",
    ),
    ("unknown field", {"colour": "blue"}, "colour"),
    ("unknown advanced field", {"advanced": {"turbo": True}}, "advanced.turbo"),
    ("port policy", {"incoming": {"host": "imap.example.com", "port": 1993}}, "incoming.port"),
]


@pytest.mark.integration
async def test_every_bad_create_names_its_field_and_stores_nothing(
    client: httpx.AsyncClient, events: Recorder
) -> None:
    for what, overrides, field in BAD_CREATES:
        body = profile_body(f"bad {what}") | overrides
        body = {k: v for k, v in body.items() if v is not None}
        r = await client.post("/profiles", json=body)
        assert r.status_code == 422, (what, r.text)
        fields = [e["field"] for e in r.json()["errors"]]
        assert field in fields, (what, fields)
        assert CANARY not in r.text
    listed = (await client.get("/profiles")).json()
    assert listed["total"] == 0
    # A valid write afterwards: its event arrives, and it is the only profile event there is.
    assert (await client.post("/profiles", json=profile_body())).status_code == 201
    await events.wait_for("ProfileCreated", 1)
    profile_events = [m for m in events.messages if m.subject.startswith("mailwarden.profile.")]
    assert len(profile_events) == 1


@pytest.mark.integration
async def test_bad_patch_changes_nothing(client: httpx.AsyncClient, events: Recorder) -> None:
    created = (await client.post("/profiles", json=profile_body())).json()
    pid = created["profile_id"]
    bad_patches: list[tuple[dict[str, Any], str]] = [
        ({"incoming": {"port": 0}}, "incoming.port"),
        ({"advanced": {"max_concurrent_connections": 500}}, "advanced.max_concurrent_connections"),
        ({"advanced": {"verify_tls": False}}, "advanced.tls_verification_exception"),
        ({"incoming": {"tls": "none"}}, "incoming.tls"),
        ({"outgoing": {"host": "smtp.other.example.com"}}, "outgoing.host"),
        ({"credential_source": "profile"}, "credentials.incoming"),
        ({"name": ""}, "name"),
        ({"incoming": {"port": 2525}}, "incoming.port"),
    ]
    for patch, field in bad_patches:
        r = await client.patch(f"/profiles/{pid}", json=patch)
        assert r.status_code == 422, (patch, r.text)
        assert field in [e["field"] for e in r.json()["errors"]], (patch, r.text)
    after = (await client.get(f"/profiles/{pid}")).json()
    assert after == created
    r = await client.patch(f"/profiles/{pid}", json={"description": "changed"})
    assert r.status_code == 200
    await events.wait_for("ProfileUpdated", 1)
    assert len(events.of("ProfileUpdated")) == 1
    assert (await client.get("/profiles/bad id")).status_code == 422
    assert (await client.get("/profiles/prf_missing")).status_code == 404
