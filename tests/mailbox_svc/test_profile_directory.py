"""ProfileDirectory decides on profile-svc's word, never on a read model that lags (pure logic)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mailbox_helpers import profile_snapshot

from contracts.events import ProfileSnapshot
from contracts.models import CredentialSource
from mailbox_svc.profiles import PROFILE_GET, ProfileDirectory, ProfileUnavailable
from mailwarden_runtime.http import DomainError


class ReadModel:
    """The repository's two profile reads; empty: the events have not arrived."""

    def __init__(self, known: ProfileSnapshot | None = None, deleted: bool = False) -> None:
        self.known = known
        self.deleted = deleted

    async def get_profile(self, _: str) -> ProfileSnapshot | None:
        return self.known

    async def profile_deleted(self, _: str) -> bool:
        return self.deleted


def answering(reply: dict[str, Any] | Exception, asked: list[str]) -> Any:
    async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
        assert subject == PROFILE_GET
        asked.append(json.loads(body)["profile_id"])
        if isinstance(reply, Exception):
            raise reply
        return json.dumps(reply).encode()

    return ask


def view(snap: ProfileSnapshot) -> dict[str, Any]:
    """profile-svc's ProfileView: no sealed login, a flag instead."""
    body = snap.model_dump(mode="json", exclude={"sealed_credentials"})
    return {**body, "has_credentials": snap.sealed_credentials is not None, "created_at": body["updated_at"]}


async def test_a_profile_the_read_model_lacks_is_asked_for() -> None:
    asked: list[str] = []
    snap = profile_snapshot("p1")
    directory = ProfileDirectory(ReadModel(), answering({"ok": True, "result": view(snap)}, asked))
    found = await directory.require("p1")
    assert found.profile_id == "p1" and found.incoming == snap.incoming and asked == ["p1"]


async def test_only_profile_svc_s_no_refuses_and_silence_is_not_a_no() -> None:
    asked: list[str] = []
    missing = ProfileDirectory(
        ReadModel(), answering({"ok": False, "status": 404, "detail": "no such profile"}, asked)
    )
    with pytest.raises(DomainError) as refused:
        await missing.require("ghost", "mailboxes.3.profile_id")
    assert (refused.value.status, refused.value.field) == (422, "mailboxes.3.profile_id")
    silent = ProfileDirectory(ReadModel(), answering(TimeoutError("no answer"), asked))
    with pytest.raises(DomainError) as unavailable:
        await silent.require("p1")
    assert unavailable.value.status == 503
    deleted = ProfileDirectory(ReadModel(deleted=True), answering(TimeoutError("not asked"), asked))
    assert await deleted.find("gone") is None  # a deletion seen is final: no question
    assert asked == ["ghost", "p1"]


async def test_a_profile_login_is_waited_for_before_a_test() -> None:
    snap = profile_snapshot("p2", source=CredentialSource.PROFILE)
    directory = ProfileDirectory(ReadModel(), answering({"ok": True, "result": view(snap)}, []), settle_s=0.2)
    assert (await directory.find("p2")) is not None  # it exists: a mailbox may use it
    with pytest.raises(ProfileUnavailable):
        await directory.find("p2", with_login=True)  # but its sealed login has not arrived
