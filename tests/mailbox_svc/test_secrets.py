"""Credentials: sealed to their mailbox, rotated online, and never visible anywhere in plain text."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from bson import json_util
from mailbox_helpers import MakeHarness, key_text, mailbox_body
from pydantic import SecretStr

from contracts.models import SealedSecret
from mailwarden_runtime.crypto import KeyRing, SealError


async def test_ciphertext_copied_to_another_mailbox_does_not_open(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="a"))
        await h.http.post("/mailboxes", json=mailbox_body(2, mailbox_id="b", password="other"))
        ring = KeyRing.parse(h.settings.credential_keys.get_secret_value())  # type: ignore[union-attr]
        a = await h.db.mailboxes.find_one({"_id": "a"})
        stolen = a["credentials"]["incoming"]
        assert stolen["kid"] == "k1"
        assert (
            json.loads(ring.open(SealedSecret(**stolen), "mailbox:a:incoming"))["password"] == "pw-secret-1"
        )
        with pytest.raises(SealError):
            ring.open(SealedSecret(**stolen), "mailbox:b:incoming")
        with pytest.raises(SealError):
            ring.open(SealedSecret(**stolen), "mailbox:a:outgoing")
        await h.db.mailboxes.update_one({"_id": "b"}, {"$set": {"credentials.incoming": stolen}})
        r = await h.http.post("/mailboxes/b/test")
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "credentials"
        assert await h.no_more_requests()
        r = await h.http.post("/mailboxes/test", json={"mailbox_ids": ["a", "b"]})
        assert r.json()["done"] == ["a"] and r.json()["refused"][0]["code"] == "credentials_unreadable"
        # a new password repairs it
        r = await h.http.patch("/mailboxes/b", json={"credentials": {"password": "fresh"}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "credentials.password"
        r = await h.http.patch("/mailboxes/b", json={"credentials": {"username": "b", "password": "fresh"}})
        assert r.status_code == 200, r.text


async def test_key_rotation_reencrypts_every_credential(make_harness: MakeHarness) -> None:
    old, new = key_text("old"), key_text("new")
    async with make_harness(credential_keys=SecretStr(old)) as h:
        await h.profile()
        bodies = [
            mailbox_body(
                i,
                mailbox_id=f"r{i}",
                outgoing_credentials={"username": f"o{i}", "password": f"op{i}"} if i % 2 else None,
            )
            for i in range(6)
        ]
        assert (await h.http.post("/mailboxes/batch", json={"mailboxes": bodies})).status_code == 201
    async with make_harness(credential_keys=SecretStr(f"{new},{old}")) as h:  # new key first: it seals
        # a password set after the new key came in is already under it
        await h.http.patch("/mailboxes/r0", json={"credentials": {"password": "changed"}})
        r = await h.http.post("/mailboxes/rotate-keys")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["primary_kid"] == "new" and report["unreadable"] == 0
        assert report["rotated"] == {"old": 5 + 3} and report["already_primary"] == 1
        again = (await h.rpc("rotate_keys", {}))["result"]
        assert again["rotated"] == {} and again["already_primary"] == 9
        rotations = [m["data"] for m in await h.stream_messages("mailwarden.keys.rotated")]
        assert [(e["actor"], e["data"]["rotated"]) for e in rotations] == [
            ("token:admin", 8),
            ("token:admin", 0),
        ]
    async with make_harness(credential_keys=SecretStr(new)) as h:  # the old key is gone
        ring = KeyRing.parse(new)
        async for doc in h.db.mailboxes.find({}):
            for direction, ct in doc["credentials"].items():
                if ct:
                    assert ct["kid"] == "new"
                    assert json.loads(ring.open(SealedSecret(**ct), f"mailbox:{doc['_id']}:{direction}"))
        await h.profile()
        assert (await h.http.post("/mailboxes/r1/test")).status_code == 202


async def test_rotate_command(make_harness: MakeHarness, mongo_uri: str) -> None:
    old, new = key_text("old"), key_text("new")
    async with make_harness(credential_keys=SecretStr(old)) as h:
        await h.profile()
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="c1"))
        db_name = h.settings.mongodb_db
    env = {
        **os.environ,
        "MW_CREDENTIAL_KEYS": f"{new},{old}",  # the shared name of before: still read
        "MW_MONGODB_URI": mongo_uri,
        "MW_MONGODB_DB": db_name,
    }
    env.pop("MW_DEV_MODE", None)
    out = await run_rotate(env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rotated"] == {"old": 1}
    env["MW_MAILBOX_CREDENTIAL_KEYS"] = (
        new  # its own name wins over the shared one; now the old ciphertexts would not open: none is left
    )
    out = await run_rotate(env)
    assert out.returncode == 0 and json.loads(out.stdout)["unreadable"] == 0


async def run_rotate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailbox_svc.rotate", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess([], proc.returncode or 0, stdout.decode(), stderr.decode())


def _variants(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    ]


async def test_canary_password_is_never_visible(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    canary_out = f"CANARYOUT-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with make_harness(retry_interval_s=0.1, retry_max_attempts=2, scheduler_poll_s=0.05) as h:
        await h.profile()

        async def call(method: str, url: str, **kw: Any) -> Any:
            r = await h.http.request(method, url, **kw)
            seen.append(r.text)
            return r

        body = mailbox_body(
            1,
            mailbox_id="cm",
            password=canary,
            outgoing_credentials={"username": "o", "password": canary_out},
        )
        assert (await call("POST", "/mailboxes", json=body)).status_code == 201
        await call("POST", "/mailboxes", json={**body, "mailbox_id": "cm"})  # 409
        await call("POST", "/mailboxes", json={**body, "mailbox_id": "bad id!"})  # 422
        await call(
            "POST", "/mailboxes", json={**body, "credentials": {"username": "u", "password": canary, "x": 1}}
        )
        await call("PATCH", "/mailboxes/cm", json={"credentials": {"password": canary}})
        await call("PATCH", "/mailboxes/cm", json={"credentials": {"password": ""}, "email": canary})
        await call("GET", "/mailboxes/cm")
        await call("GET", "/mailboxes")
        await call("POST", "/mailboxes/approve", json={"mailbox_ids": ["cm"]})
        await call("POST", "/mailboxes/cm/test")
        (req,) = await h.test_requests(1)
        await h.complete(req, incoming="auth_failed", outgoing="tcp_timeout")
        (req2,) = await h.test_requests(1)
        await h.complete(req2, outgoing="success")
        await h.wait_mailbox("cm", lambda m: m["pending_test_id"] is None and not m["test_scheduled"])
        await call("GET", "/mailboxes/cm/tests")
        await call("POST", "/mailboxes/rotate-keys")
        seen.append(json.dumps(await h.rpc("get", {"mailbox_id": "cm"})))
        seen.append(json.dumps(await h.rpc("create", {**body, "mailbox_id": "cm"})))
        seen.append(
            json.dumps(
                await h.rpc(
                    "update",
                    {"mailbox_id": "cm", "changes": {"credentials": {"password": canary, "bogus": 1}}},
                )
            )
        )
        stream = await h.stream_messages()
        assert any(e["data"].get("type") == "TestRequested" for e in stream)
        seen.extend(e["body"] for e in stream)
        dump = []
        for name in await h.db.list_collection_names():
            dump.extend(json_util.dumps(d) for d in await h.db[name].find({}).to_list(None))
        seen.extend(dump)
    seen.extend(
        r.getMessage() + " " + json.dumps({k: str(v) for k, v in r.__dict__.items()}) for r in caplog.records
    )
    assert len(caplog.records) > 0
    text = "\n".join(seen)
    for secret in (canary, canary_out):
        for variant in _variants(secret):
            assert variant not in text
    assert "ct" in "".join(dump)  # the credentials are there, as ciphertext
