"""The credential-redirect attack, end to end: point a profile (or move a mailbox) at a listener of
the attacker's, ask for Test & Enable, and count what reaches the listener: no credential byte."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from mailwarden_servers import DovecotServer, SmtpServer

from . import test_flow as flow
from .test_flow import _SETTINGS_FIELDS, System, create_mailbox, create_profile, eventually, run_test_and_wait

system = flow.system  # the four services and the test mail servers, as in the flow tests

pytestmark = pytest.mark.integration
USER, PASSWORD = "alice", "alice-pw"  # known to Dovecot and the SMTP server alike


@dataclass
class Listener:
    """A plain-TCP 'IMAP server' that greets, accepts anything and keeps every byte it is sent."""

    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)


@pytest.fixture
async def attacker() -> AsyncIterator[Listener]:
    listener = Listener()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Plays a plaintext IMAP server that takes any login, so a sent password would be seen."""
        listener.connections += 1
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        await writer.drain()
        try:
            while line := await asyncio.wait_for(reader.readline(), 5):
                listener.received += line
                tag, _, rest = line.decode("latin-1").partition(" ")
                if rest.upper().startswith("CAPABILITY"):
                    writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
                elif rest.upper().startswith("AUTHENTICATE") and rest.strip().upper().endswith("PLAIN"):
                    writer.write(b"+ \r\n")
                    await writer.drain()
                    listener.received += await asyncio.wait_for(reader.readline(), 5)
                elif rest.upper().startswith("SELECT") or rest.upper().startswith("EXAMINE"):
                    writer.write(b"* 0 EXISTS\r\n")
                writer.write(f"{tag} OK done\r\n".encode())
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    async with server:
        yield listener


async def _allow_port(system: System, port: int) -> None:
    body = (await system.profiles.get("/settings")).json()
    body = {k: v for k, v in body.items() if k in _SETTINGS_FIELDS}
    body["allowed_ports"] = [*body["allowed_ports"], port]
    resp = await system.profiles.put("/settings", json=body)
    assert resp.status_code == 200, resp.text


async def _tested(system: System, mailbox_id: str, test_id: str) -> bool:
    mbx = (await system.mailboxes.get(f"/mailboxes/{mailbox_id}")).json()
    return mbx["pending_test_id"] != test_id


def _leaked(listener: Listener) -> bool:
    raw = bytes(listener.received)
    forms = [
        PASSWORD.encode(),
        base64.b64encode(PASSWORD.encode()),
        base64.b64encode(f"\0alice\0{PASSWORD}".encode()),
    ]
    return any(f in raw for f in forms)


async def test_redirecting_a_profile_sends_no_stored_password_to_the_new_host(
    system: System, dovecot: DovecotServer, smtp_server: SmtpServer, attacker: Listener
) -> None:
    tag = uuid.uuid4().hex[:8]
    user = USER
    profile_id = await create_profile(system, "imap", dovecot.imaps_port, smtp_server.port_starttls, tag)
    mailbox_id = await create_mailbox(system, profile_id, user, PASSWORD, tag)
    first = await run_test_and_wait(system, mailbox_id)
    assert first["incoming_status"] == "success"  # the login works where it was entered

    await _allow_port(system, attacker.port)
    hostile = {"host": "127.0.0.1", "port": attacker.port, "tls": "none"}
    resp = await system.profiles.patch(
        f"/profiles/{profile_id}",
        json={"incoming": hostile, "advanced": {"allow_plaintext_auth": True}},
    )
    assert resp.status_code == 200, resp.text

    async def refused_or_sent_to_the_listener() -> bool:
        """mailbox-svc learns the change from ProfileUpdated: test until it acts on the new server."""
        r = await system.mailboxes.post(f"/mailboxes/{mailbox_id}/test")
        if r.status_code == 409:
            return bool(r.json()["errors"][0]["field"] == "credentials")
        assert r.status_code == 202, r.text
        await eventually(
            lambda: _tested(system, mailbox_id, r.json()["test_id"]), "the test to finish", timeout=60
        )
        return attacker.connections > 0

    await eventually(refused_or_sent_to_the_listener, "Test & Enable against the redirected profile")
    assert not _leaked(attacker), "the stored password reached the attacker's listener"
    bulk = await system.mailboxes.post("/mailboxes/test", json={"mailbox_ids": [mailbox_id]})
    assert bulk.json()["refused"][0]["code"] == "credentials_redirected"
    assert attacker.connections == 0

    # Entered again (by someone who knows it), the login goes to the new server: that is the point.
    resp = await system.mailboxes.patch(
        f"/mailboxes/{mailbox_id}", json={"credentials": {"username": user, "password": "attackers-own-pw"}}
    )
    assert resp.status_code == 200, resp.text


async def test_moving_a_mailbox_to_the_attackers_profile_forgets_its_passwords(
    system: System, dovecot: DovecotServer, smtp_server: SmtpServer, attacker: Listener
) -> None:
    tag = uuid.uuid4().hex[:8]
    user = USER
    good = await create_profile(system, "imap", dovecot.imaps_port, smtp_server.port_starttls, tag)
    mailbox_id = await create_mailbox(system, good, user, PASSWORD, tag)
    await _allow_port(system, attacker.port)
    evil = await create_profile(system, "imap", attacker.port, attacker.port, tag + "e")

    async def moved() -> bool:
        r = await system.mailboxes.patch(f"/mailboxes/{mailbox_id}", json={"profile_id": evil})
        return r.status_code == 200

    await eventually(moved, "mailbox-svc to know the attacker's profile")
    view = (await system.mailboxes.get(f"/mailboxes/{mailbox_id}")).json()
    assert view["credentials"]["has_password"] is False
    await system.mailboxes.post("/mailboxes/approve", json={"mailbox_ids": [mailbox_id]})
    await system.mailboxes.post(f"/mailboxes/{mailbox_id}/test")
    await asyncio.sleep(3.0)  # whatever the tester does now, it has no password of this mailbox
    assert not _leaked(attacker)
    # A username-only change may not revive the forgotten password either.
    resp = await system.mailboxes.patch(f"/mailboxes/{mailbox_id}", json={"credentials": {"username": user}})
    assert resp.status_code == 422, resp.text


async def test_profile_logins_must_be_given_again_with_a_new_destination(
    system: System, dovecot: DovecotServer, smtp_server: SmtpServer, attacker: Listener
) -> None:
    tag = uuid.uuid4().hex[:8]
    resp = await system.profiles.post(
        "/profiles",
        json={
            "name": f"shared {tag}",
            "owner": {"kind": "user", "id": "p", "name": "P", "email": "p@example.org"},
            "incoming_protocol": "imap",
            "incoming": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit"},
            "use_same_settings_for_outgoing": False,
            "outgoing": {"host": "127.0.0.1", "port": smtp_server.port_starttls, "tls": "starttls"},
            "credential_source": "profile",
            "credentials": {
                "incoming": {"username": "alice", "password": PASSWORD},
                "outgoing": {"username": "alice", "password": PASSWORD},
            },
        },
    )
    assert resp.status_code == 201, resp.text
    profile_id = resp.json()["profile_id"]
    await _allow_port(system, attacker.port)
    hostile = {"host": "127.0.0.1", "port": attacker.port, "tls": "none"}
    for patch in ({"incoming": hostile}, {"advanced": {"verify_tls": False}}):
        resp = await system.profiles.patch(f"/profiles/{profile_id}", json=patch)
        assert resp.status_code == 422, resp.text
        assert "credentials.incoming" in [e["field"] for e in resp.json()["errors"]]
    same_place = await system.profiles.patch(f"/profiles/{profile_id}", json={"description": "renamed"})
    assert same_place.status_code == 200, same_place.text
    assert attacker.connections == 0


async def _set_default_profile(system: System, profile_id: str | None) -> None:
    body = (await system.profiles.get("/settings")).json()
    body = {k: v for k, v in body.items() if k in _SETTINGS_FIELDS}
    body["default_profile_id"] = profile_id
    resp = await system.profiles.put("/settings", json=body)
    assert resp.status_code == 200, resp.text


async def test_a_login_entered_before_the_first_profile_survives_edits_that_keep_the_destination(
    system: System, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    """The seed's flow: a mailbox's password is entered before it has a profile, the default profile
    is applied, then the profile's description is edited. Only a change of destination makes the
    login unusable; a description edit never does."""
    tag = uuid.uuid4().hex[:8]
    profile_id = await create_profile(system, "imap", dovecot.imaps_port, smtp_server.port_starttls, tag)
    resp = await system.mailboxes.post(
        "/mailboxes",
        json={
            "mailbox_id": f"mbx{tag}",
            "email": f"{USER}@mail.test",
            "owner": {"kind": "user", "id": f"o{tag}", "name": "O", "email": f"o{tag}@example.org"},
            "credentials": {"username": USER, "password": PASSWORD},
        },
    )
    assert resp.status_code == 201, resp.text
    mailbox_id = f"mbx{tag}"
    before = (await system.profiles.get("/settings")).json().get("default_profile_id")
    await _set_default_profile(system, profile_id)
    try:

        async def applied() -> bool:
            r = await system.mailboxes.post(
                "/mailboxes/apply-default-settings", json={"mailbox_ids": [mailbox_id]}
            )
            if r.status_code == 409:  # mailbox-svc has not seen the new default profile yet
                return False
            assert r.status_code == 202, r.text
            return mailbox_id in r.json()["test_ids"]

        await eventually(applied, "mailbox-svc to know the default profile")
    finally:
        await _set_default_profile(system, before)
    view = (await system.mailboxes.get(f"/mailboxes/{mailbox_id}")).json()
    assert view["profile_id"] == profile_id and view["credentials"]["has_password"] is True

    resp = await system.profiles.patch(f"/profiles/{profile_id}", json={"description": "edited"})
    assert resp.status_code == 200, resp.text
    # mailbox-svc learns of the edit from ProfileUpdated; every Test & Enable meanwhile and after
    # it is accepted (the old date rule refused the login as soon as the edit arrived).
    for _ in range(12):
        await asyncio.sleep(0.25)
        r = await system.mailboxes.post(f"/mailboxes/{mailbox_id}/test")
        assert r.status_code in (202, 409), r.text
        if r.status_code == 409:
            assert r.json()["errors"][0]["field"] != "credentials", r.text

    # A change of destination still makes it unusable.
    resp = await system.profiles.patch(
        f"/profiles/{profile_id}",
        json={"advanced": {"verify_tls": False, "tls_verification_exception": "a lab server"}},
    )
    assert resp.status_code == 200, resp.text

    async def refused() -> bool:
        bulk = await system.mailboxes.post("/mailboxes/test", json={"mailbox_ids": [mailbox_id]})
        return any(x.get("code") == "credentials_redirected" for x in bulk.json().get("refused", []))

    await eventually(refused, "the login refused after the destination changed")
