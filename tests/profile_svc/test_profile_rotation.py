"""Key rotation covers profile logins: re-encrypted under the new key, and every ciphertext opened so
one that no longer opens is reported (today's mailbox rotation skipped those on the primary key)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from profile_svc_helpers import profile_body
from pymongo import AsyncMongoClient

from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.mongo import database_name
from mailwarden_servers import NatsServer
from profile_svc.app import create_app
from profile_svc.config import ProfileSettings

pytestmark = pytest.mark.integration


async def test_rotation_reseals_profile_logins_and_reports_the_unreadable(
    private_nats: NatsServer, mongo_uri: str
) -> None:
    db_name = "t_" + uuid.uuid4().hex[:12]
    old, new = KeyRing.generate_key_text("old"), KeyRing.generate_key_text("new")
    transit = KeyRing.generate_key_text("t1")
    token = await issue_token(private_nats.url)

    @asynccontextmanager
    async def service(ring: str) -> AsyncIterator[httpx.AsyncClient]:
        settings = ProfileSettings(
            nats_url=private_nats.url,
            mongodb_uri=mongo_uri,
            mongodb_db=db_name,
            log_setup=False,
            credential_keys=ring,
            transit_keys=transit,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = bearer_header(token)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=headers) as c:
                yield c

    login = {"username": "shared", "password": "pw-rotation-1"}
    async with service(old) as http:
        ids = []
        for n in range(2):
            body = profile_body(
                f"rot {n}", credential_source="profile", credentials={"incoming": login, "outgoing": login}
            )
            body["use_same_settings_for_outgoing"] = False
            body["outgoing"] = {"host": "smtp.example.com", "port": 587, "tls": "starttls"}
            resp = await http.post("/profiles", json=body)
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["profile_id"])
    async with service(f"{new},{old}") as http:
        report = (await http.post("/profiles/rotate-keys")).json()
        assert report["rotated"] == {"old": 4} and report["unreadable"] == 0, report
        again = (await http.post("/profiles/rotate-keys")).json()
        assert again["rotated"] == {} and again["already_primary"] == 4
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    try:
        profiles = mongo[database_name(db_name, "profile-svc")]["profiles"]
        stored = await profiles.find_one({"_id": ids[0]})
        assert stored is not None
        assert {c["kid"] for c in stored["credentials"].values()} == {"new"}  # type: ignore[union-attr]
        # one ciphertext altered on the primary key: the next rotation opens it and names the profile
        broken = dict(stored["credentials"])  # type: ignore[call-overload]
        broken["incoming"] = {**broken["incoming"], "ct": broken["outgoing"]["ct"]}
        await profiles.update_one({"_id": ids[0]}, {"$set": {"credentials": broken}})
    finally:
        await mongo.close()
    async with service(new) as http:
        report = (await http.post("/profiles/rotate-keys")).json()
        assert report["unreadable"] == 1 and report["unreadable_profiles"] == [ids[0]], report
        refused = await http.post("/profiles/rotate-keys", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
