"""A mailbox created the moment its profile exists is never refused (issue #18).

mailbox-svc learns profiles from ProfileCreated, which may arrive after the mailbox request; a miss
in its read model is settled by asking profile-svc, so "unknown email server profile" means unknown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header

pytestmark = pytest.mark.integration

TRIES = 200
AT_ONCE = 4


def _owner(oid: str) -> dict[str, str]:
    return {"kind": "user", "id": oid, "name": oid, "email": f"{oid}@example.org"}


async def test_profile_then_mailbox_at_once_is_never_refused(
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> None:
    async with mailwarden_services() as apps:
        auth = bearer_header(apps["profile"].state.token)
        profiles = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["profile"]), base_url="http://p", headers=auth
        )
        mailboxes = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["mailbox"]), base_url="http://m", headers=auth
        )
        refusals: list[str] = []

        async def one(i: int) -> None:
            tag = f"{i}-{uuid.uuid4().hex[:6]}"
            r = await profiles.post(
                "/profiles",
                json={
                    "name": f"race {tag}",
                    "owner": _owner("padmin"),
                    "incoming_protocol": "imap",
                    "incoming": {"host": "imap.example.org", "port": 993, "tls": "implicit"},
                    "use_same_settings_for_outgoing": False,
                    "outgoing": {"host": "smtp.example.org", "port": 587, "tls": "starttls"},
                },
            )
            assert r.status_code == 201, r.text
            r = await mailboxes.post(
                "/mailboxes",
                json={
                    "mailbox_id": f"race{i}",
                    "email": f"race{i}@example.org",
                    "owner": _owner(f"o{i}"),
                    "profile_id": r.json()["profile_id"],
                    "credentials": {"username": f"u{i}", "password": "pw"},
                },
            )
            if r.status_code != 201:
                refusals.append(f"{r.status_code} {r.text}")

        async with profiles, mailboxes:
            for start in range(0, TRIES, AT_ONCE):
                await asyncio.gather(*(one(i) for i in range(start, min(start + AT_ONCE, TRIES))))
            assert refusals == [], f"{len(refusals)} of {TRIES} refused: {refusals[:3]}"
            # and the answer for a profile that does not exist is still a refusal naming the field
            r = await mailboxes.post(
                "/mailboxes",
                json={"email": "x@example.org", "owner": _owner("x"), "profile_id": "nosuchprofile"},
            )
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "profile_id", r.text
