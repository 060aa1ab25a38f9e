"""The console's parts that need no browser: the session cookie, refusals, and the route table
checked against the services' operation declarations (so a renamed route fails here)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from alert_svc.api import OPERATIONS as ALERT_OPERATIONS
from mailbox_svc.api import OPERATIONS as MAILBOX_OPERATIONS
from mailwarden_console.client import ROUTES, Refused
from mailwarden_console.config import ConsoleSettings
from mailwarden_console.live import Hub, Inbox, Notice
from mailwarden_console.session import Session, SessionCodec
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.operations import Operation
from profile_svc.api import OPERATIONS as PROFILE_OPERATIONS
from sync_svc.api import OPERATIONS as SYNC_OPERATIONS

DECLARED: dict[str, tuple[Operation[Any, Any], ...]] = {
    "profile-svc": PROFILE_OPERATIONS,
    "mailbox-svc": MAILBOX_OPERATIONS,
    "alert-svc": ALERT_OPERATIONS,
    "sync-svc": SYNC_OPERATIONS,
}


@pytest.mark.parametrize("key", sorted(ROUTES))
def test_every_route_is_a_declared_operation(key: str) -> None:
    route = ROUTES[key]
    ops = {op.name: op for op in DECLARED[route.service]}
    assert route.operation in ops, f"{route.service} declares no {route.operation}"
    op = ops[route.operation]
    assert (route.method, route.path) == (op.method, op.path)


def _codec(max_age_s: int = 3600) -> SessionCodec:
    return SessionCodec(KeyRing.parse(KeyRing.generate_key_text("s1")), max_age_s)


def test_session_round_trip_hides_the_token() -> None:
    codec = _codec()
    session = Session.start("secret-api-token-123456")
    value = codec.seal(session)
    assert "secret-api-token" not in value
    assert codec.open(value) == session
    assert session.label == "token …3456"


def test_tampered_expired_or_foreign_cookies_are_no_session() -> None:
    codec = _codec(max_age_s=60)
    value = codec.seal(Session.start("secret-api-token-123456"))
    kid, nonce, ct = value.split(".")
    flipped = ct[:-2] + ("A" if ct[-2] != "A" else "B") + ct[-1]
    assert codec.open(f"{kid}.{nonce}.{flipped}") is None
    assert codec.open("garbage") is None and codec.open(None) is None
    assert _codec().open(value) is None, "another key ring must not open it"
    old = Session("secret-api-token-123456", "token", "csrf", time.time() - 61)
    assert codec.open(codec.seal(old)) is None
    ended = Session.start("secret-api-token-123456", "oidc", expires_at=time.time() - 1)
    assert codec.open(codec.seal(ended)) is None, "the token expired: so did the session"


def test_the_session_follows_the_identity_it_was_started_with() -> None:
    identity = {
        "subject": "ann",
        "roles": ["mailbox_owner"],
        "permissions": {"mailboxes:read": "own", "mailboxes:test": "own", "alerts:read": "own"},
    }
    codec = _codec()
    owner = Session.start("t" * 20, identity=identity)
    assert codec.open(codec.seal(owner)) == owner
    assert owner.may("mailboxes:test") and not owner.may("mailboxes:test", everything=True)
    assert owner.only_own("alerts:read") and not owner.may("mailboxes:approve")
    assert owner.label == "ann (mailbox owner) · token …tttt"


def test_refusals_say_what_the_user_may_not_do() -> None:
    forbidden = Refused(403, "needs mailboxes:approve", "approve email of mailboxes")
    assert forbidden.message == "You may not approve email of mailboxes."
    named = Refused(403, "needs mailboxes:approve", "approve email of mailboxes", service="mailbox-svc")
    assert named.message == (
        "You may not approve email of mailboxes. (mailbox-svc answered 403: needs mailboxes:approve)"
    )
    assert "sign in again" in Refused(401, "bad token", "see mailboxes").message
    invalid = Refused(422, "invalid request", "x", [{"field": "incoming.port", "message": "too big"}])
    assert invalid.by_field() == {"incoming.port": "too big"}


async def test_a_busy_page_gets_each_changed_thing_once_in_order() -> None:
    hub = Hub()
    async with hub.listen() as inbox:
        for _ in range(300):  # a job's progress events while the page was busy
            hub.publish(Notice("job", {"job_id": "j1"}))
        hub.publish(Notice("alert", {"alert_id": "a1"}))
        hub.publish(Notice("job", {"job_id": "j1"}))
        assert await inbox.get() == Notice("job", {"job_id": "j1"})
        assert await inbox.get() == Notice("alert", {"alert_id": "a1"})
        hub.close()
        assert await inbox.get() is None
    assert hub.listeners == 0


async def test_a_page_far_behind_keeps_the_newest() -> None:
    inbox = Inbox(limit=3)
    for i in range(5):
        inbox.put(Notice("alert", {"alert_id": f"a{i}"}))
    inbox.close()
    got = [await inbox.get() for _ in range(4)]
    assert got == [Notice("alert", {"alert_id": f"a{i}"}) for i in (2, 3, 4)] + [None]


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "apps" / "console" / "README.md").read_text()
    for name, spec in ConsoleSettings.model_fields.items():
        names = {f"MW_CONSOLE_{name.upper()}"}
        choices = getattr(spec.validation_alias, "choices", [])
        names |= {str(c) for c in choices}
        assert any(f"`{n}`" in readme for n in names), f"apps/console/README.md: no row for {name} ({names})"


def test_a_user_is_sent_only_the_notices_of_what_their_role_sees() -> None:
    from mailwarden_console.pages.events import Visible

    owner = Session.start(
        "t" * 20,
        identity={"subject": "ann", "permissions": {"mailboxes:read": "own", "alerts:read": "own"}},
    )
    admin = Session.start("t" * 20, identity={"subject": "root", "permissions": dict.fromkeys(
        ("mailboxes:read", "alerts:read", "jobs:run"), "all")})  # fmt: skip
    notices = [
        Notice("alert", {"alert_id": "1", "recipient": "user:ann", "mailbox_id": "m1"}),
        Notice("alert", {"alert_id": "2", "recipient": "user:bob", "mailbox_id": "m2"}),
        Notice("mailbox", {"mailbox_id": "m1"}),
        Notice("mailbox", {"mailbox_id": "m2"}),
        Notice("job", {"job_id": "j1"}),
    ]
    assert [n for n in notices if Visible(owner, {"m1"})(n)] == [notices[0], notices[2]]
    assert [n for n in notices if Visible(admin)(n)] == notices
    nobody = Session.start("t" * 20, identity={"subject": "x", "permissions": {}})
    assert [n for n in notices if Visible(nobody)(n)] == []
