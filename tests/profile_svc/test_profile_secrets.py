"""Profile credentials are write-only: never in responses, events, logs or the database in clear."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from bson import json_util
from nats.aio.client import Client
from profile_svc_helpers import CANARY, Recorder, outbox_drained, profile_body, stream_bodies

from contracts.models import SealedSecret
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.keys import MissingKeyError, load_keyring
from profile_svc.app import create_app
from profile_svc.config import ProfileSettings
from profile_svc.credentials import AT_REST_PURPOSE

CANARY_OUT = CANARY + "-smtp"


def _open(sealed: dict[str, Any], profile_id: str, direction: str) -> dict[str, str]:
    ring = KeyRing.for_development("transit")
    plain = ring.open(SealedSecret.model_validate(sealed), f"profile:{profile_id}:{direction}")
    loaded: dict[str, str] = json.loads(plain)
    return loaded


@pytest.mark.integration
async def test_canary_password_never_leaks(
    client: httpx.AsyncClient, nc: Client, db: Any, events: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = profile_body(
        credential_source="profile",
        use_same_settings_for_outgoing=False,
        outgoing={"host": "smtp.example.com", "port": 587, "tls": "starttls"},
        credentials={
            "incoming": {"username": "in@example.com", "password": CANARY},
            "outgoing": {"username": "out@example.com", "password": CANARY_OUT},
        },
    )
    responses = [await client.post("/profiles", json=body)]
    pid = responses[0].json()["profile_id"]
    assert responses[0].json()["has_credentials"] is True
    # an omitted secret is kept; re-sending the same one is no change
    responses.append(await client.patch(f"/profiles/{pid}", json={"description": "kept secrets"}))
    same = {"incoming": {"username": "in@example.com", "password": CANARY}}
    responses.append(await client.patch(f"/profiles/{pid}", json={"credentials": same}))
    assert responses[-1].json()["version"] == 2
    responses.append(
        await client.patch(f"/profiles/{pid}", json={"credentials": same, "incoming": {"port": 0}})
    )
    assert responses[-1].status_code == 422
    responses.append(await client.get(f"/profiles/{pid}"))
    responses.append(await client.get("/profiles"))
    assert responses[-2].json()["has_credentials"] is True

    await outbox_drained(db)
    updated = await events.wait_for("ProfileUpdated", 1)
    sealed = updated[-1]["data"]["profile"]["sealed_credentials"]
    assert _open(sealed["incoming"], pid, "incoming") == {"username": "in@example.com", "password": CANARY}
    assert _open(sealed["outgoing"], pid, "outgoing")["password"] == CANARY_OUT
    with pytest.raises(SealError):  # bound to its profile and direction
        _open(sealed["incoming"], pid, "outgoing")

    stored = await db["profiles"].find_one({"_id": pid})
    at_rest = KeyRing.for_development(AT_REST_PURPOSE)
    plain = at_rest.open(
        SealedSecret.model_validate(stored["credentials"]["incoming"]), f"profile:{pid}:incoming"
    )
    assert json.loads(plain)["password"] == CANARY

    dump = ""
    for name in await db.list_collection_names():
        dump += json_util.dumps(await db[name].find().to_list(None))
    on_stream = b"".join(await stream_bodies(nc.jetstream()))
    for secret in (CANARY, CANARY_OUT):
        for r in responses:
            assert secret not in r.text
        assert secret not in caplog.text
        assert secret.encode() not in on_stream
        assert secret not in dump
        for msg in events.messages:
            assert secret.encode() not in msg.data

    # switching to mailbox credentials drops the stored ciphertexts
    r = await client.patch(f"/profiles/{pid}", json={"credential_source": "mailbox"})
    assert r.status_code == 200 and r.json()["has_credentials"] is False
    assert not (await db["profiles"].find_one({"_id": pid})).get("credentials")


def test_refuses_to_start_without_keys_outside_dev_mode(mongo_uri: str) -> None:
    base = {"mongodb_uri": mongo_uri, "dev_mode": False, "log_setup": False}
    key = KeyRing.generate_key_text("k1")
    with pytest.raises(MissingKeyError, match="MW_PROFILE_CREDENTIAL_KEYS"):
        create_app(ProfileSettings(**base, credential_keys=None, transit_keys=key))
    with pytest.raises(MissingKeyError, match="MW_TRANSIT_KEYS"):
        create_app(ProfileSettings(**base, credential_keys=key, transit_keys=None))
    assert create_app(
        ProfileSettings(**base, credential_keys=key, transit_keys=KeyRing.generate_key_text("t1"))
    )


def test_dev_mode_built_in_keys_differ_from_mailbox_svcs() -> None:
    """Without keys (dev mode) each service still has its own at-rest key: neither opens the other's."""
    from mailbox_svc.config import Settings as MailboxSettings
    from mailbox_svc.keys import KeyRings

    mailbox = KeyRings.load(MailboxSettings(dev_mode=True, log_setup=False, credential_keys=None)).at_rest
    profile = load_keyring(None, "MW_PROFILE_CREDENTIAL_KEYS", AT_REST_PURPOSE, dev_mode=True)
    assert mailbox.primary_kid != profile.primary_kid
    for sealer, opener in ((mailbox, profile), (profile, mailbox)):
        with pytest.raises(SealError):
            opener.open(sealer.seal(b"secret", "mailbox:m1:incoming"), "mailbox:m1:incoming")
