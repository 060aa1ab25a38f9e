"""Stored credentials tampered with in the database: they must fail to open, cleanly.

tests/runtime/test_crypto.py covers the key ring itself (a flipped bit, another record's binding),
tests/mailbox_svc/test_secrets.py a mailbox ciphertext copied onto another mailbox. What is left:
profile-svc's stored profile credentials, with a flipped bit or moved onto another profile, and a
mailbox ciphertext with a flipped bit, each driven through the service's API.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from chaos.harness import System, owner, private_nats
from chaos.infra import Infra

pytestmark = pytest.mark.integration


def flip(sealed: dict[str, Any]) -> dict[str, Any]:
    raw = bytearray(base64.urlsafe_b64decode(sealed["ct"] + "=" * (-len(sealed["ct"]) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return {**sealed, "ct": base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")}


def profile_body(name: str, password: str) -> dict[str, Any]:
    return {
        "name": name,
        "owner": owner("user", "u1"),
        "incoming_protocol": "imap",
        "incoming": {"host": "imap.example.com", "port": 993, "tls": "implicit"},
        "credential_source": "profile",
        "credentials": {"incoming": {"username": "shared", "password": password}},
    }


@pytest.mark.parametrize("tamper", ["flipped_bit", "moved_from_another_profile"])
async def test_tampered_profile_credentials_are_refused_not_crashed(
    infra: Infra, tmp_path: Path, tamper: str
) -> None:
    async with (
        private_nats(tmp_path / "nats") as server,
        System(tmp_path, server.url, infra.mongo_uri, infra.certs, in_process=("profile-svc",)) as system,
    ):
        http = system.http("profile-svc")
        a = (await http.post("/profiles", json=profile_body("a", "pw-a"))).json()["profile_id"]
        b = (await http.post("/profiles", json=profile_body("b", "pw-b"))).json()["profile_id"]
        coll = system.db("profile-svc").profiles
        doc_a = await coll.find_one({"_id": a})
        doc_b = await coll.find_one({"_id": b})
        sealed = (
            doc_b["credentials"]["incoming"]
            if tamper != "flipped_bit"
            else flip(doc_a["credentials"]["incoming"])
        )
        await coll.update_one({"_id": a}, {"$set": {"credentials.incoming": sealed}})

        read = await http.get(f"/profiles/{a}")
        assert read.status_code == 200, read.text
        changed = await http.patch(f"/profiles/{a}", json={"description": "x"})
        assert changed.status_code < 500, changed.text
        if changed.status_code != 200:
            assert changed.json()["errors"][0]["field"].startswith("credentials"), changed.text
        # New credentials repair it.
        repaired = await http.patch(
            f"/profiles/{a}", json={"credentials": {"incoming": {"username": "shared", "password": "fresh"}}}
        )
        assert repaired.status_code == 200, repaired.text
